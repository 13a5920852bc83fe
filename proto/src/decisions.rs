//! Records of the `sampling_decisions` topic: one per decided trace, keyed by its 16 trace-ID bytes and on the
//! trace's own partition, in a compacted topic. A sampler that takes over a partition reads the recent ones so
//! that late spans keep their trace's decision.
//!
//! Value (version 1): `[1, keep (0 or 1), policy name as UTF-8…]`.

const VERSION: u8 = 1;

/// A sampling decision as stored in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    /// The policy that kept the trace; empty when dropped.
    pub policy: String,
}

impl Decision {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.policy.len());
        out.push(VERSION);
        out.push(u8::from(self.keep));
        out.extend_from_slice(self.policy.as_bytes());
        out
    }

    /// `None` for a value of an unknown version or shape.
    pub fn decode(value: &[u8]) -> Option<Decision> {
        match value {
            [VERSION, keep @ (0 | 1), policy @ ..] => {
                Some(Decision { keep: *keep == 1, policy: String::from_utf8_lossy(policy).into_owned() })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_the_unknown() {
        let kept = Decision { keep: true, policy: "errors-always".into() };
        assert_eq!(Decision::decode(&kept.encode()), Some(kept));
        let dropped = Decision { keep: false, policy: String::new() };
        assert_eq!(Decision::decode(&dropped.encode()), Some(dropped));
        assert_eq!(Decision::decode(&[2, 1]), None);
        assert_eq!(Decision::decode(&[]), None);
    }
}

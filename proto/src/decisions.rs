//! Records of the `sampling_decisions` topic: one per decided trace, on the trace's own partition, in a compacted
//! topic. A sampler that takes over a partition reads the recent ones so that late spans keep their trace's
//! decision.
//!
//! Key ([`key`]): the 16 trace-ID bytes, then, for a tenant other than the default, the tenant's name (its
//! `tailgate.tenant` header is on the record too). Two tenants' traces may share an ID; compaction keeps the newest
//! record per key, so each tenant's decision needs a key of its own.
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

/// The decision record's key for trace `trace_id` of `tenant` (`None`: the default tenant).
pub fn key(trace_id: &[u8], tenant: Option<&str>) -> Vec<u8> {
    let mut key = Vec::with_capacity(trace_id.len() + tenant.map_or(0, str::len));
    key.extend_from_slice(trace_id);
    key.extend_from_slice(tenant.unwrap_or_default().as_bytes());
    key
}

/// The trace ID of a decision record's `key`, given the tenant its header names (`None`: the default tenant);
/// `None` for a key that is not this tenant's. A bare 16-byte key is taken for any tenant: decision records
/// written before keys carried the tenant are still loaded during an upgrade.
pub fn trace_id<'k>(key: &'k [u8], tenant: Option<&str>) -> Option<&'k [u8]> {
    let (id, rest) = key.split_at_checked(16)?;
    (rest.is_empty() || rest == tenant.unwrap_or_default().as_bytes()).then_some(id)
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

    /// Tenants' decisions for one trace ID are different keys, so compaction keeps both; the default tenant's key
    /// is the trace ID alone, as before tenants.
    #[test]
    fn each_tenant_has_its_own_key() {
        let id = [7u8; 16];
        assert_eq!(key(&id, None), id);
        assert_ne!(key(&id, Some("checkout")), key(&id, Some("billing")));
        assert_ne!(key(&id, Some("checkout")), key(&id, None));
        assert_eq!(trace_id(&key(&id, Some("checkout")), Some("checkout")), Some(&id[..]));
        assert_eq!(trace_id(&key(&id, None), None), Some(&id[..]));
        assert_eq!(trace_id(&key(&id, Some("checkout")), Some("billing")), None);
        assert_eq!(trace_id(&id, Some("checkout")), Some(&id[..]), "a record from before tenants had keys");
        assert_eq!(trace_id(&id[..8], None), None);
    }
}

//! Records of the `sampling_decisions` topic: the decisions a sampler made for one partition and tenant in one
//! decision tick, batched into as few records as the record limit allows, on that partition. A sampler that takes
//! over a partition reads the recent ones so that late spans keep their trace's decision. One record per trace
//! (version 1) made the decisions most of what a sampler wrote to Kafka — one produce per dropped trace — and, on
//! the embedded broker, most of its work.
//!
//! Key ([`key`]): the record's first decision's 16 trace-ID bytes, then, for a tenant other than the default, the
//! tenant's name (its `tailgate.tenant` header is on the record too): distinct per record, so a topic an earlier
//! version made compacted keeps every batch.
//!
//! Versions before batching read only version 1 and skip version-2 records: upgrade every sampler together.
//!
//! Value, version 2 ([`encode_batches`]): `[2]`, then per decision `trace ID (16 bytes), keep (0 or 1), policy
//! name length (1 byte), policy name (UTF-8, at most 255 bytes)`. Version 1, one decision per record keyed by its
//! trace ID, `[1, keep, policy…]`, is still read ([`entries`]), so decisions written before an upgrade load.

const VERSION_ONE: u8 = 1;
const VERSION: u8 = 2;
/// Bytes of one version-2 entry besides its policy name.
const ENTRY_OVERHEAD: usize = 16 + 1 + 1;

/// A sampling decision as stored in Kafka.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub keep: bool,
    /// The policy that kept the trace; empty when dropped.
    pub policy: String,
}

impl Decision {
    /// The version-1 value: one decision per record, as versions before batching wrote them. Still read.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.policy.len());
        out.push(VERSION_ONE);
        out.push(u8::from(self.keep));
        out.extend_from_slice(self.policy.as_bytes());
        out
    }
}

/// The policy name as stored: cut to 255 bytes at a character boundary.
fn stored_policy(policy: &str) -> &str {
    let mut end = policy.len().min(u8::MAX as usize);
    while !policy.is_char_boundary(end) {
        end -= 1;
    }
    &policy[..end]
}

/// Version-2 values holding `decisions` in order, each at most `max_value_bytes` (but at least one decision), each
/// with the trace ID of its first decision (for its [`key`]).
pub fn encode_batches<'d>(
    decisions: impl IntoIterator<Item = (&'d [u8; 16], &'d Decision)>,
    max_value_bytes: usize,
) -> Vec<([u8; 16], Vec<u8>)> {
    let mut values = Vec::new();
    let mut value: Option<([u8; 16], Vec<u8>)> = None;
    for (trace_id, decision) in decisions {
        let policy = stored_policy(&decision.policy);
        if value.as_ref().is_some_and(|(_, v)| v.len() + ENTRY_OVERHEAD + policy.len() > max_value_bytes) {
            values.extend(value.take());
        }
        let (_, value) = value.get_or_insert_with(|| (*trace_id, vec![VERSION]));
        value.extend_from_slice(trace_id);
        value.push(u8::from(decision.keep));
        value.push(policy.len() as u8);
        value.extend_from_slice(policy.as_bytes());
    }
    values.extend(value);
    values
}

/// The decisions of one record of the topic, with their trace IDs, given its key and the tenant its header names
/// (`None`: the default tenant): a version-2 batch, or a version-1 record (its trace ID in its key). `None` for a
/// value of an unknown version or shape, or a version-1 key that is not this tenant's.
pub fn entries(key: Option<&[u8]>, value: &[u8], tenant: Option<&str>) -> Option<Vec<([u8; 16], Decision)>> {
    match value {
        [VERSION_ONE, keep @ (0 | 1), policy @ ..] => {
            let id = trace_id(key?, tenant)?.try_into().ok()?;
            let decision = Decision { keep: *keep == 1, policy: String::from_utf8_lossy(policy).into_owned() };
            Some(vec![(id, decision)])
        }
        [VERSION, entries @ ..] => {
            let (mut rest, mut out) = (entries, Vec::new());
            while !rest.is_empty() {
                let (id, after) = rest.split_first_chunk::<16>()?;
                let [keep @ (0 | 1), length, after @ ..] = after else { return None };
                let (policy, after) = after.split_at_checked(usize::from(*length))?;
                let policy = String::from_utf8_lossy(policy).into_owned();
                out.push((*id, Decision { keep: *keep == 1, policy }));
                rest = after;
            }
            Some(out)
        }
        _ => None,
    }
}

/// The decision record's key for trace `trace_id` of `tenant` (`None`: the default tenant).
pub fn key(trace_id: &[u8], tenant: Option<&str>) -> Vec<u8> {
    let mut key = Vec::with_capacity(trace_id.len() + tenant.map_or(0, str::len));
    key.extend_from_slice(trace_id);
    key.extend_from_slice(tenant.unwrap_or_default().as_bytes());
    key
}

/// The trace ID of a version-1 record's `key`, given the tenant its header names (`None`: the default tenant);
/// `None` for a key that is not this tenant's. A bare 16-byte key is taken for any tenant: decision records
/// written before keys carried the tenant are still loaded during an upgrade.
fn trace_id<'k>(key: &'k [u8], tenant: Option<&str>) -> Option<&'k [u8]> {
    let (id, rest) = key.split_at_checked(16)?;
    (rest.is_empty() || rest == tenant.unwrap_or_default().as_bytes()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(keep: bool, policy: &str) -> Decision {
        Decision { keep, policy: policy.into() }
    }

    #[test]
    fn batches_round_trip_within_the_value_bound() {
        let decisions: Vec<([u8; 16], Decision)> = (0..10u8)
            .map(|i| ([i; 16], if i % 3 == 0 { decision(true, "errors-always") } else { decision(false, "") }))
            .collect();
        // 1 version byte + entries of 18 (dropped) or 31 (kept) bytes: 3 entries fit in 80 bytes, never 4.
        let values = encode_batches(decisions.iter().map(|(id, d)| (id, d)), 80);
        assert!(
            values.iter().all(|(_, v)| v.len() <= 80),
            "{:?}",
            values.iter().map(|(_, v)| v.len()).collect::<Vec<_>>()
        );
        assert_eq!(values.len(), 4);
        let read: Vec<_> = values.iter().flat_map(|(_, v)| entries(None, v, None).unwrap()).collect();
        assert_eq!(read, decisions);
        // Each record is keyed by its own first decision: distinct keys, so compaction removes none.
        let firsts: Vec<[u8; 16]> = values.iter().map(|(first, _)| *first).collect();
        assert_eq!(firsts, [[0; 16], [3; 16], [6; 16], [9; 16]]);
        // One decision larger than the bound still gets its record.
        let one = encode_batches([(&[1u8; 16], &decision(true, "errors-always"))], 4);
        assert_eq!(one.len(), 1);
        assert_eq!(entries(None, &one[0].1, None).unwrap().len(), 1);
        assert!(encode_batches(std::iter::empty(), 80).is_empty());
    }

    #[test]
    fn long_policy_names_are_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let values = encode_batches([(&[0u8; 16], &decision(true, &long))], 1 << 20);
        let (_, read) = entries(None, &values[0].1, None).unwrap().remove(0);
        assert_eq!(read.policy, "é".repeat(127));
    }

    #[test]
    fn refuses_the_unknown_and_the_truncated() {
        let (_, value) = encode_batches([(&[0u8; 16], &decision(true, "errors-always"))], 1 << 20).remove(0);
        // `[2]` alone is an empty batch; any cut inside an entry is refused.
        assert_eq!(entries(None, &value[..1], None), Some(Vec::new()));
        for cut in 2..value.len() {
            assert_eq!(entries(None, &value[..cut], None), None, "cut at {cut}");
        }
        assert_eq!(entries(None, &[3, 1], None), None);
        assert_eq!(entries(None, &[], None), None);
        assert_eq!(entries(Some(&[0; 16]), &[1, 2], None), None, "keep is 0 or 1");
    }

    /// Version-1 records, as earlier versions wrote them, still load: a tenant's decision for a shared trace ID
    /// is its own key; a bare trace-ID key is taken for any tenant.
    #[test]
    fn version_one_records_still_load() {
        let id = [7u8; 16];
        let kept = decision(true, "errors-always");
        let value = kept.encode_v1();
        assert_eq!(entries(Some(&key(&id, None)), &value, None), Some(vec![(id, kept.clone())]));
        assert_eq!(
            entries(Some(&key(&id, Some("checkout"))), &value, Some("checkout")),
            Some(vec![(id, kept.clone())])
        );
        assert_eq!(entries(Some(&key(&id, Some("checkout"))), &value, Some("billing")), None);
        assert_eq!(
            entries(Some(&id), &value, Some("checkout")),
            Some(vec![(id, kept)]),
            "a record from before tenants"
        );
        assert_eq!(entries(Some(&id[..8]), &value, None), None);
        assert_eq!(entries(None, &value, None), None);
        assert_ne!(key(&id, Some("checkout")), key(&id, Some("billing")));
    }
}

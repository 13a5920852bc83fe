//! What each exporter's backend module implements: turning Kafka records into one backend's requests.

use bytes::Bytes;

/// Turns Kafka records into backend requests. Runs on the worker's task; translation state (running totals of
/// delta sums) lives here.
use crate::delivery::Tenant;

pub trait Backend: Send + 'static {
    /// What one request accumulates.
    type Items: Default + Send + 'static;

    /// Decodes a record of `partition` and `tenant` and adds its items; a batch holds one tenant's records only.
    /// `Err` is a record that can't be decoded: it goes to the dead-letter topic with that reason.
    fn add(
        &mut self,
        items: &mut Self::Items,
        partition: i32,
        tenant: &Tenant,
        payload: &[u8],
    ) -> Result<Batch, String>;

    /// The request body of a batch.
    fn encode(&mut self, items: Self::Items) -> Bytes;

    /// `partitions` are no longer owned (or owned again under a new epoch): forget what was learnt from their
    /// records, which the next owner reads again from the last commit. Called before any record of a new ownership
    /// is added.
    fn revoked(&mut self, _partitions: &[i32]) {}
}

/// What one record may become after translation, as a multiple of the batch's `max_bytes` (32 MiB for the default
/// 2 MiB): room for legitimate expansion (a classic histogram of 20 bounds becomes 22 series, each with every label),
/// and a bound on a record crafted to multiply. Past it, the record's remaining points or lines are dropped and
/// counted (`reason="translation_limit"`).
pub const MAX_RECORD_EXPANSION: usize = 16;

/// What adding one record did.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Items added (spans, samples, log lines).
    pub items: u64,
    /// Items that can't be expressed for the backend, by reason; the rest of the record is delivered.
    pub dropped: Vec<(&'static str, u64)>,
    /// Log lines shortened to the backend's limit.
    pub truncated: u64,
    /// About how many bytes the items add to the request body (before compression): what a batch becomes after
    /// translation, which the worker bounds like the records' bytes.
    pub bytes: usize,
}

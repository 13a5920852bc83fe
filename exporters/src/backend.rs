//! What each exporter's backend module implements: turning Kafka records into one backend's requests.

use bytes::Bytes;

/// Turns Kafka records into backend requests. Runs on the worker's task; translation state (running totals of
/// delta sums) lives here.
pub trait Backend: Send + 'static {
    /// What one request accumulates.
    type Items: Default + Send + 'static;

    /// Decodes a record of `partition` and adds its items. `Err` is a record that can't be decoded: it goes to the
    /// dead-letter topic with that reason.
    fn add(&mut self, items: &mut Self::Items, partition: i32, payload: &[u8]) -> Result<Batch, String>;

    /// The request body of a batch.
    fn encode(&mut self, items: Self::Items) -> Bytes;

    /// `partitions` are no longer owned (or owned again under a new epoch): forget what was learnt from their
    /// records, which the next owner reads again from the last commit. Called before any record of a new ownership
    /// is added.
    fn revoked(&mut self, _partitions: &[i32]) {}
}

/// What adding one record did.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Items added (spans, samples, log lines).
    pub items: u64,
    /// Items that can't be expressed for the backend, by reason; the rest of the record is delivered.
    pub dropped: Vec<(&'static str, u64)>,
    /// Log lines shortened to the backend's limit.
    pub truncated: u64,
}

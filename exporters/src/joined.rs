//! Records passed through as OTLP: a topic's records already are export requests, and concatenated encodings of
//! an export request are one valid request of them all (its only field is repeated). A batch is the records' bytes
//! joined, each validated and counted on its wire format first, none decoded. The Jaeger exporter (OTLP/gRPC) and
//! Loki's OTLP endpoint (OTLP/HTTP) send their batches this way.

use bytes::Bytes;
use tailgate_proto::wire::WireSignal;

use crate::backend::{Backend, Batch};
use crate::delivery::Tenant;

pub struct Joined {
    signal: WireSignal,
    /// The request body of the joined bytes: as they are, or compressed for a transport that does not compress.
    encode: fn(Vec<u8>) -> Bytes,
}

impl Joined {
    pub fn new(signal: WireSignal, encode: fn(Vec<u8>) -> Bytes) -> Joined {
        Joined { signal, encode }
    }
}

impl Backend for Joined {
    /// Encoded export requests, joined.
    type Items = Vec<u8>;

    fn add(&mut self, items: &mut Self::Items, _partition: i32, _: &Tenant, payload: &[u8]) -> Result<Batch, String> {
        let count = self.signal.validate(payload).map_err(|e| format!("not OTLP {} data: {e}", self.signal.name()))?;
        items.extend_from_slice(payload);
        Ok(Batch { items: count as u64, bytes: payload.len(), ..Batch::default() })
    }

    fn encode(&mut self, items: Self::Items) -> Bytes {
        (self.encode)(items)
    }
}

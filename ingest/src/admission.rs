//! Admission before work: a request's share of the in-flight budget is taken for its bytes as they arrive, for the
//! bytes they inflate to, and for what decoding will allocate, each before that work is done. So whatever the
//! number of clients and the size of their requests, the gateway's request memory stays within
//! `ingest.max_in_flight_bytes`: a request that does not fit is answered at once with a retryable "throttled",
//! having cost no more than the chunk that did not fit. Both transports admit through here: OTLP/HTTP in its
//! handler, OTLP/gRPC in a layer in front of tonic (`grpc/mod.rs`).

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::BodyExt;

use crate::budget::{Budget, Permit};
use crate::error::ExportError;
use crate::rate_limit::{RateLimitConfig, RateLimiter};
use crate::tenant::Tenant;

/// What decoding allocates per byte of OTLP protobuf: prost's owned messages (a `Vec` or `String` per ID, name and
/// attribute, each with its 24-byte header, and the fixed-size structs around them — a `Span` is ~300 bytes).
/// Measured with a counting allocator on spans of 51, 89, 222 and 380 bytes on the wire (no attributes up to 16):
/// 9.1, 8.1, 4.7 and 4.3 bytes decoded per byte. A request of many nearly empty messages decodes to more (an empty
/// span is 2 bytes on the wire); only not decoding bounds that, which is the byte-level gateway's job.
const PROTOBUF_DECODE_COST: usize = 10;
/// What splitting traces or logs on their wire format allocates per byte, besides a fixed cost per item that the
/// sink pays once it counted them (`tailgate_proto::wire::SCAN_BYTES_PER_ITEM`): the copy tonic frames the message
/// in, the records (every item once, with copies of its resource and scope), and librdkafka's copy of them.
const PROTOBUF_SPLIT_COST: usize = 3;
/// The same for OTLP/JSON, which is parsed to a `serde_json::Value` tree first (a node per value, a map per
/// object) and then to the messages: 7.5 to 21 bytes per JSON byte for the same spans.
const JSON_DECODE_COST: usize = 24;
/// Inflation proceeds, and is paid for, in steps of this much output.
const INFLATE_STEP: usize = 64 * 1024;
/// The largest zstd window a body may ask for (2^23, 8 MiB: what RFC 8878 asks every decoder to support). A frame
/// may declare up to 2^27 without saying how long it is, and the decoder allocates the window it declares; so the
/// window is paid for before decoding, and a frame that wants more is refused.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// The encodings a payload can be decoded from, which differ in what decoding costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Decoded into messages (metrics).
    Protobuf,
    /// Split on the wire format, never decoded (traces, logs).
    ProtobufWire,
    Json,
}

/// A body's compression, from `Content-Encoding` or `grpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Identity,
    Gzip,
    Zstd,
}

impl Compression {
    /// `None` for an encoding the gateway does not speak.
    pub fn parse(name: &str) -> Option<Compression> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Some(Compression::Identity),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// The gateway's admission: the budget and the limits every request is held to.
#[derive(Clone, Debug)]
pub struct Admission {
    budget: Budget,
    /// The largest payload, after decompression.
    max_request_bytes: usize,
    /// How long a body may take to arrive whole.
    read_timeout: Duration,
    throttle_retry_after: Duration,
    /// Per-tenant rate limits, when configured.
    rate_limit: Option<Arc<RateLimiter>>,
    /// Every request is decoded (redaction changes spans and log records), so none pays the wire split's lower
    /// cost.
    decodes_everything: bool,
}

impl Admission {
    pub fn new(
        budget: Budget,
        max_request_bytes: usize,
        read_timeout: Duration,
        throttle_retry_after: Duration,
        rate_limit: Option<RateLimitConfig>,
    ) -> Self {
        let rate_limit = rate_limit.map(|config| Arc::new(RateLimiter::new(config)));
        Admission {
            budget,
            max_request_bytes,
            read_timeout,
            throttle_retry_after,
            rate_limit,
            decodes_everything: false,
        }
    }

    /// Charges every protobuf request what decoding it costs: with redaction, traces and logs are decoded too.
    pub(crate) fn decoding_everything(self) -> Self {
        Admission { decodes_everything: true, ..self }
    }

    /// Charges `tenant`'s rate limit for a payload of `bytes` (decompressed), before it is decoded.
    pub(crate) fn rate_limit(&self, tenant: &Tenant, bytes: usize) -> Result<(), ExportError> {
        match &self.rate_limit {
            Some(limiter) => limiter.take(tenant, bytes),
            None => Ok(()),
        }
    }

    pub(crate) fn budget(&self) -> &Budget {
        &self.budget
    }

    pub(crate) fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// A share of nothing yet, for one request.
    pub(crate) fn permit(&self) -> Permit {
        self.budget.empty()
    }

    fn take(&self, permit: &mut Permit, bytes: usize) -> Result<(), ExportError> {
        if permit.grow(bytes) {
            Ok(())
        } else {
            Err(ExportError::Throttled { retry_after: self.throttle_retry_after })
        }
    }

    /// Reads `body` whole, paying for every chunk before keeping it, and refusing it once it passes `limit` bytes
    /// or has not arrived after the read timeout. An over-size body is never buffered whole.
    pub(crate) async fn read<B>(&self, body: B, limit: usize, permit: &mut Permit) -> Result<Vec<u8>, ExportError>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let read = async {
            let mut body = body;
            let mut out = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| ExportError::Decode(format!("cannot read the request body: {e}")))?;
                let Ok(mut chunk) = frame.into_data() else { continue };
                if out.len().saturating_add(chunk.remaining()) > limit {
                    return Err(ExportError::TooLarge { limit: self.max_request_bytes as u64 });
                }
                self.reserve(&mut out, chunk.remaining(), limit, permit)?;
                while chunk.has_remaining() {
                    let piece = chunk.chunk();
                    out.extend_from_slice(piece);
                    let n = piece.len();
                    chunk.advance(n);
                }
            }
            Ok(out)
        };
        tokio::time::timeout(self.read_timeout, read)
            .await
            .unwrap_or(Err(ExportError::ReadTimeout { after: self.read_timeout }))
    }

    /// Undoes `compression`, appending to `out` at most [`Admission::max_request_bytes`] bytes and paying for each
    /// step of output before producing it: a small body that inflates to gigabytes is refused after the limit, and
    /// costs its share of the budget on the way.
    pub fn inflate(
        &self,
        compression: Compression,
        data: &[u8],
        mut out: Vec<u8>,
        permit: &mut Permit,
    ) -> Result<Vec<u8>, ExportError> {
        let start = out.len();
        let mut reader: Box<dyn Read + '_> = match compression {
            Compression::Identity => Box::new(data),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Compression::Zstd => {
                let invalid = |e: std::io::Error| ExportError::Decode(format!("invalid zstd body: {e}"));
                self.take(permit, 1 << ZSTD_WINDOW_LOG_MAX)?;
                let mut decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(invalid)?;
                decoder.window_log_max(ZSTD_WINDOW_LOG_MAX).map_err(invalid)?;
                Box::new(decoder)
            }
        };
        // One byte past the limit tells an over-size payload from one of exactly the limit.
        let most = self.max_request_bytes.saturating_add(1);
        loop {
            let produced = out.len() - start;
            if produced > self.max_request_bytes {
                return Err(ExportError::TooLarge { limit: self.max_request_bytes as u64 });
            }
            let step = INFLATE_STEP.min(most - produced);
            self.reserve(&mut out, step, start.saturating_add(most), permit)?;
            let n = (&mut reader).take(step as u64).read_to_end(&mut out).map_err(|e| {
                ExportError::Decode(format!("invalid {} body: {e}", format!("{compression:?}").to_lowercase()))
            })?;
            if n == 0 {
                return Ok(out);
            }
        }
    }

    /// Makes room in `out` for `additional` more bytes, paying for the capacity it allocates: it doubles, as a
    /// `Vec` does, but never past `most` bytes.
    fn reserve(
        &self,
        out: &mut Vec<u8>,
        additional: usize,
        most: usize,
        permit: &mut Permit,
    ) -> Result<(), ExportError> {
        let needed = out.len().saturating_add(additional);
        if needed <= out.capacity() {
            return Ok(());
        }
        let capacity = needed.max(out.capacity().saturating_mul(2).min(most));
        self.take(permit, capacity - out.capacity())?;
        out.reserve_exact(capacity - out.len());
        Ok(())
    }

    /// Pays for decoding a payload of `len` bytes in `format`, before decoding it.
    pub(crate) fn before_decoding(&self, permit: &mut Permit, len: usize, format: Format) -> Result<(), ExportError> {
        let cost = match format {
            Format::ProtobufWire if self.decodes_everything => PROTOBUF_DECODE_COST,
            Format::Protobuf => PROTOBUF_DECODE_COST,
            Format::ProtobufWire => PROTOBUF_SPLIT_COST,
            Format::Json => JSON_DECODE_COST,
        };
        self.take(permit, len.saturating_mul(cost))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use http_body_util::Full;

    use super::*;

    fn admission(budget: &Budget, limit: usize) -> Admission {
        Admission::new(budget.clone(), limit, Duration::from_secs(5), Duration::from_secs(1), None)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn a_body_is_paid_for_as_it_arrives_and_refused_when_the_budget_is_spent() {
        let budget = Budget::new(10_000);
        let admission = admission(&budget, 8_000);
        let mut first = admission.permit();
        let body = admission.read(Full::new(Bytes::from(vec![1; 6_000])), 8_000, &mut first).await.unwrap();
        assert_eq!((body.len(), first.bytes()), (6_000, 6_000));
        let mut second = admission.permit();
        let refused = admission.read(Full::new(Bytes::from(vec![1; 6_000])), 8_000, &mut second).await.map(|b| b.len());
        assert!(matches!(refused, Err(ExportError::Throttled { .. })), "{refused:?}");
        assert_eq!(budget.in_use(), 6_000, "the refused body took nothing");
        let too_large =
            admission.read(Full::new(Bytes::from(vec![1; 9_000])), 8_000, &mut second).await.map(|b| b.len());
        assert!(matches!(too_large, Err(ExportError::TooLarge { limit: 8_000 })), "{too_large:?}");
    }

    #[test]
    fn inflating_pays_per_step_and_stops_at_the_limit() {
        let budget = Budget::new(u64::from(u32::MAX));
        let admission = admission(&budget, 1_000_000);
        let data = b"0123456789".repeat(90_000);
        let mut permit = admission.permit();
        let out = admission.inflate(Compression::Gzip, &gzip(&data), Vec::new(), &mut permit).unwrap();
        assert_eq!(out, data);
        assert_eq!(permit.bytes(), out.capacity(), "what was allocated is what was paid for");

        let bomb = gzip(&vec![0; 50_000_000]);
        let mut permit = admission.permit();
        let refused = admission.inflate(Compression::Gzip, &bomb, Vec::new(), &mut permit).map(|out| out.len());
        assert!(matches!(refused, Err(ExportError::TooLarge { limit: 1_000_000 })), "{refused:?}");
        assert!(permit.bytes() <= 1_000_001, "paid {} for a refused bomb", permit.bytes());
    }

    #[test]
    fn inflating_is_throttled_when_the_budget_runs_out_midway() {
        let budget = Budget::new(1_000_000);
        let admission = admission(&budget, 1_000_000);
        let _other = budget.try_acquire(700_000).unwrap();
        let data = b"0123456789".repeat(90_000);
        let mut permit = admission.permit();
        let refused = admission.inflate(Compression::Gzip, &gzip(&data), Vec::new(), &mut permit).map(|out| out.len());
        assert!(matches!(refused, Err(ExportError::Throttled { .. })), "{refused:?}");
        assert!(permit.bytes() <= 300_000);
    }

    /// A zstd frame may declare a window of up to 128 MiB in a few bytes, and the decoder would allocate it: a
    /// window past 8 MiB is refused, and the one allowed is paid for.
    #[test]
    fn a_zstd_window_past_8_mib_is_refused_and_the_window_is_paid_for() {
        let zstd = |window_log: u32| {
            let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
            encoder.window_log(window_log).unwrap();
            encoder.include_contentsize(false).unwrap();
            encoder.write_all(&vec![7; 100_000]).unwrap();
            encoder.finish().unwrap()
        };
        let budget = Budget::new(u64::from(u32::MAX));
        let admission = admission(&budget, 1_000_000);
        let mut permit = admission.permit();
        let out = admission.inflate(Compression::Zstd, &zstd(20), Vec::new(), &mut permit).unwrap();
        assert_eq!(out.len(), 100_000);
        assert_eq!(permit.bytes(), (1 << ZSTD_WINDOW_LOG_MAX) + out.capacity());
        let mut permit = admission.permit();
        let refused = admission.inflate(Compression::Zstd, &zstd(27), Vec::new(), &mut permit).map(|out| out.len());
        assert!(matches!(refused, Err(ExportError::Decode(_))), "{refused:?}");
    }

    /// A limit at the top of the range must neither wrap to "read nothing" (an empty, silently accepted body) nor
    /// panic.
    #[test]
    fn limits_near_the_maximum_do_not_wrap() {
        let budget = Budget::new(u64::from(u32::MAX));
        let admission = admission(&budget, usize::MAX);
        let body = b"0123456789".repeat(100);
        let mut permit = admission.permit();
        assert_eq!(admission.inflate(Compression::Gzip, &gzip(&body), Vec::new(), &mut permit).unwrap(), body);
    }
}

//! Jaeger (or any OTLP receiver) over OTLP/gRPC, from the sampled-spans topic.
//!
//! Records already are `ExportTraceServiceRequest`s; a batch merges their resource spans into one request. Status
//! handling follows the OTLP specification: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, `ABORTED`,
//! `OUT_OF_RANGE`, `DATA_LOSS`, and `RESOURCE_EXHAUSTED` with `RetryInfo` are retried; anything else is a refusal;
//! a partial success is recorded, not retried.

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::config::{Compression, JaegerConfig};
use crate::delivery::{Attempt, Transport};
use crate::{Backend, Batch};

pub struct Jaeger;

impl Backend for Jaeger {
    type Items = ExportTraceServiceRequest;

    fn add(&mut self, items: &mut Self::Items, payload: &[u8]) -> Result<Batch, String> {
        let mut request =
            ExportTraceServiceRequest::decode(payload).map_err(|e| format!("not OTLP trace data: {e}"))?;
        let spans = tailgate_proto::count_items(&mut request) as u64;
        items.resource_spans.extend(request.resource_spans);
        Ok(Batch { items: spans, ..Batch::default() })
    }

    fn encode(&mut self, items: Self::Items) -> Bytes {
        Bytes::from(items.encode_to_vec())
    }
}

pub struct GrpcTransport {
    client: TraceServiceClient<Channel>,
    metadata: Vec<(MetadataKey<tonic::metadata::Ascii>, MetadataValue<tonic::metadata::Ascii>)>,
    timeout: Duration,
}

impl GrpcTransport {
    pub fn new(config: &JaegerConfig) -> Result<GrpcTransport, String> {
        let timeout = config.timeout.get();
        let endpoint = Endpoint::from_str(&config.endpoint)
            .map_err(|e| format!("`{}`: {e}", config.endpoint))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        let mut client = TraceServiceClient::new(endpoint.connect_lazy()).max_decoding_message_size(4 << 20);
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let metadata = config
            .headers
            .iter()
            .filter_map(|(k, v)| Some((MetadataKey::from_str(&k.to_ascii_lowercase()).ok()?, v.parse().ok()?)))
            .collect();
        Ok(GrpcTransport { client, metadata, timeout })
    }

    async fn export(&self, body: Bytes) -> Attempt {
        // Decoding our own encoding cannot fail; the request was built from decoded records.
        let request = ExportTraceServiceRequest::decode(body).unwrap_or_default();
        let mut request = tonic::Request::new(request);
        request.set_timeout(self.timeout);
        for (key, value) in &self.metadata {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let mut client = self.client.clone();
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), client.export(request)).await {
            Err(_) => Attempt::Retry { reason: "request timed out".into(), after: None },
            Ok(Ok(response)) => match response.into_inner().partial_success {
                Some(partial) if partial.rejected_spans > 0 || !partial.error_message.is_empty() => Attempt::Accepted {
                    rejected: partial.rejected_spans.max(0) as u64,
                    reason: "partial_success",
                    message: Some(partial.error_message),
                },
                _ => Attempt::Accepted { rejected: 0, reason: "", message: None },
            },
            Ok(Err(status)) => classify(&status),
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Attempt> {
        Box::pin(self.export(body))
    }
}

/// The OTLP specification's table of retryable gRPC codes.
fn classify(status: &tonic::Status) -> Attempt {
    let after = retry_after(status);
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => Attempt::Retry { reason, after },
        Code::ResourceExhausted if after.is_some() => Attempt::Retry { reason, after },
        Code::ResourceExhausted => Attempt::Rejected { reason: "resource_exhausted", message: reason },
        Code::InvalidArgument => Attempt::Rejected { reason: "invalid_argument", message: reason },
        Code::Unauthenticated | Code::PermissionDenied => Attempt::Rejected { reason: "unauthorized", message: reason },
        _ => Attempt::Rejected { reason: "refused", message: reason },
    }
}

/// `google.rpc.RetryInfo` from the status details, if the server sent one.
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    tailgate_proto::status::Status::decode(status.details()).ok()?.retry_delay()
}

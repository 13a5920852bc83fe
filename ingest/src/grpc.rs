//! OTLP/gRPC: the Trace, Metrics and Logs services on one port.

use axum::http::{HeaderValue, Response};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};

use tailgate_kafka::Topics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Code, Request, Status};

use crate::error::Kind;
use crate::metrics as m;
use crate::otlp::Otlp;
use crate::sink::KafkaSink;

const TRANSPORT: &str = "grpc";

#[derive(Clone)]
struct Receiver {
    sink: KafkaSink,
    topics: Topics,
}

impl Receiver {
    async fn export<S: Otlp>(&self, request: Request<S>) -> Result<tonic::Response<S::Response>, Status> {
        let request = request.into_inner();
        let bytes = request.encoded_len();
        metrics::counter!(m::REQUEST_BYTES, "signal" => S::SIGNAL, "transport" => TRANSPORT).increment(bytes as u64);
        let outcome = self.sink.export(S::topic(&self.topics), S::SIGNAL, TRANSPORT, request, bytes).await;
        let label = match &outcome {
            Ok(accepted) if accepted.rejected > 0 => "partial_success",
            Ok(_) => "success",
            Err(error) => error.reason(),
        };
        metrics::counter!(m::REQUESTS, "signal" => S::SIGNAL, "transport" => TRANSPORT, "outcome" => label)
            .increment(1);
        match outcome {
            Ok(accepted) => Ok(tonic::Response::new(S::response(&accepted))),
            Err(error) => Err(error.to_grpc()),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, Status> {
        Receiver::export(self, request).await
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
        Receiver::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, Status> {
        Receiver::export(self, request).await
    }
}

/// The failures tonic's codec answers by itself, before a handler runs: a message over `max_decoding_message_size`
/// gets `OUT_OF_RANGE`, which OTLP clients retry forever, and one it cannot decompress or decode gets `INTERNAL`.
/// They are our [`Kind::TooLarge`] and [`Kind::Decode`], and answered as the status table says (each with a message
/// of its own, as tonic's detail is all we know). Our handlers never answer either tonic code, so every such status
/// came from the codec. A compressed message that inflates past the limit already gets `RESOURCE_EXHAUSTED`
/// without `RetryInfo` from tonic, as the table asks, and is left alone.
fn codec_failure(code: Code) -> Option<(Kind, &'static str)> {
    match code {
        Code::OutOfRange => Some((Kind::TooLarge, "request is larger than the limit (after decompression)")),
        Code::Internal => Some((Kind::Decode, "cannot decode the request as OTLP protobuf")),
        _ => None,
    }
}

/// Rewrites a [`codec_failure`] in the headers of the trailers-only reply.
fn remap_codec_errors<B>(mut response: Response<B>) -> Response<B> {
    let failure = response.headers().get("grpc-status").map(|v| Code::from_bytes(v.as_bytes())).and_then(codec_failure);
    if let Some((kind, message)) = failure {
        let headers = response.headers_mut();
        headers.insert("grpc-status", HeaderValue::from(kind.answer().grpc as i32));
        let detail = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let message = if detail.is_empty() { message.to_owned() } else { format!("{message}: {detail}") };
        // grpc-message is percent-encoded; keep only what needs no encoding.
        let message: String = message.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect();
        let message = message.replace('%', "%25");
        if let Ok(value) = HeaderValue::from_str(&message) {
            headers.insert("grpc-message", value);
        }
        headers.remove("grpc-status-details-bin");
    }
    response
}

/// Serves OTLP/gRPC on `listener` until `shutdown`, then finishes in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    sink: KafkaSink,
    topics: Topics,
    max_request_bytes: usize,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let receiver = Receiver { sink, topics };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(remap_codec_errors))
        .add_service(
            TraceServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_request_bytes),
        )
        .add_service(
            MetricsServiceServer::new(receiver.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_request_bytes),
        )
        .add_service(
            LogsServiceServer::new(receiver)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_request_bytes),
        )
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailers_only(status: &str, message: &str) -> Response<()> {
        let mut response = Response::new(());
        response.headers_mut().insert("grpc-status", HeaderValue::from_str(status).unwrap());
        response.headers_mut().insert("grpc-message", HeaderValue::from_str(message).unwrap());
        response.headers_mut().insert("grpc-status-details-bin", HeaderValue::from_static("AAAA"));
        response
    }

    fn answer(response: &Response<()>) -> (&str, &str, bool) {
        let header = |name| response.headers().get(name).map(|v| v.to_str().unwrap());
        (header("grpc-status").unwrap(), header("grpc-message").unwrap(), header("grpc-status-details-bin").is_some())
    }

    #[test]
    fn codec_errors_are_answered_from_the_status_table() {
        let too_large = remap_codec_errors(trailers_only("11", "found 70000 bytes, 100% of"));
        assert_eq!(
            answer(&too_large),
            ("8", "request is larger than the limit (after decompression): found 70000 bytes, 100%25 of", false)
        );
        let undecodable = remap_codec_errors(trailers_only("13", ""));
        assert_eq!(answer(&undecodable), ("3", "cannot decode the request as OTLP protobuf", false));
        // Anything else, including tonic's own RESOURCE_EXHAUSTED for a message that inflates past the limit, stays.
        let inflated = remap_codec_errors(trailers_only("8", "size limit exceeded"));
        assert_eq!(answer(&inflated), ("8", "size limit exceeded", true));
    }
}

//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, protobuf or JSON, optionally gzip-compressed.

use std::io::Read;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tailgate_kafka::Topics;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ExportError;
use crate::metrics as m;
use crate::otlp::{response_json, Otlp};
use crate::sink::KafkaSink;

const TRANSPORT: &str = "http";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone)]
struct Receiver {
    sink: KafkaSink,
    topics: Topics,
    max_request_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        }
    }
}

/// The OTLP/HTTP router. `cors_allowed_origins` empty turns CORS off.
pub fn router(sink: KafkaSink, topics: Topics, max_request_bytes: usize, cors_allowed_origins: &[String]) -> Router {
    let receiver = Receiver { sink, topics, max_request_bytes };
    let router = Router::new()
        .route("/v1/traces", post(export::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(export::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(export::<ExportLogsServiceRequest>))
        .fallback(not_found)
        .with_state(receiver);
    if cors_allowed_origins.is_empty() {
        return router;
    }
    let origins = if cors_allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cors_allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    router.layer(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([axum::http::Method::POST])
            .allow_headers([header::CONTENT_TYPE, header::CONTENT_ENCODING]),
    )
}

async fn export<S: Otlp>(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    // Until the Content-Type is known, errors are answered in protobuf, OTLP/HTTP's default.
    let mut encoding = Encoding::Protobuf;
    let outcome = async {
        encoding = content_type(&headers)?;
        let raw = read_limited(body, receiver.max_request_bytes).await?;
        metrics::counter!(m::REQUEST_BYTES, "signal" => S::SIGNAL, "transport" => TRANSPORT)
            .increment(raw.len() as u64);
        let payload = decompress(&headers, raw, receiver.max_request_bytes)?;
        let request: S = match encoding {
            Encoding::Protobuf => S::decode(payload.as_slice()).map_err(|e| ExportError::Decode(e.to_string()))?,
            Encoding::Json => crate::json::decode(&payload).map_err(ExportError::Decode)?,
        };
        receiver.sink.export(S::topic(&receiver.topics), S::SIGNAL, TRANSPORT, request, payload.len()).await
    }
    .await;

    let label = match &outcome {
        Ok(accepted) if accepted.rejected > 0 => "partial_success",
        Ok(_) => "success",
        Err(error) => error.reason(),
    };
    metrics::counter!(m::REQUESTS, "signal" => S::SIGNAL, "transport" => TRANSPORT, "outcome" => label).increment(1);

    match outcome {
        Ok(accepted) => {
            let body = match encoding {
                Encoding::Protobuf => S::response(&accepted).encode_to_vec(),
                Encoding::Json => response_json::<S>(&accepted).to_string().into_bytes(),
            };
            ([(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(error) => error_response(&error, encoding),
    }
}

/// An error answered with a `google.rpc.Status` body in the request's encoding, and `Retry-After` when throttling.
fn error_response(error: &ExportError, encoding: Encoding) -> Response {
    let status = error.rpc_status();
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => {
            serde_json::json!({ "code": status.code, "message": status.message }).to_string().into_bytes()
        }
    };
    let mut response = (error.http_status(), [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
    if let Some(delay) = error.retry_after() {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    response
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, ExportError> {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(ExportError::UnsupportedMediaType(format!(
            "unsupported Content-Type `{value}`; use {PROTOBUF} or {JSON}"
        ))),
    }
}

/// Reads the body, giving up as soon as it passes `limit`: an over-size body is never buffered whole.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ExportError> {
    let mut stream = body.into_data_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ExportError::Decode(format!("cannot read the request body: {e}")))?;
        if out.len().saturating_add(chunk.len()) > limit {
            return Err(ExportError::TooLarge { limit: limit as u64 });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Undoes `Content-Encoding`, producing at most `limit` bytes: a small gzip body that inflates to gigabytes is
/// refused after `limit + 1` bytes of output.
fn decompress(headers: &HeaderMap, raw: Vec<u8>, limit: usize) -> Result<Vec<u8>, ExportError> {
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(raw),
        "gzip" => {
            let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
            flate2::read::MultiGzDecoder::new(raw.as_slice())
                .take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|e| ExportError::Decode(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(ExportError::TooLarge { limit: limit as u64 });
            }
            Ok(out)
        }
        other => Err(ExportError::UnsupportedMediaType(format!("unsupported Content-Encoding `{other}`; use gzip"))),
    }
}

/// Answers requests to unknown paths.
async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "unknown path; OTLP/HTTP serves /v1/traces, /v1/metrics and /v1/logs\n")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    /// A limit at the top of the range must neither wrap to "read nothing" (an empty, silently accepted body) nor
    /// panic.
    #[test]
    fn limits_near_the_maximum_do_not_wrap() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let body = b"0123456789".repeat(100);
        assert_eq!(decompress(&headers, gzip(&body), usize::MAX).unwrap(), body);
        assert!(matches!(decompress(&headers, gzip(&body), 999), Err(ExportError::TooLarge { limit: 999 })));
    }
}

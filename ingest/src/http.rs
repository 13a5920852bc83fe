//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, protobuf or JSON, optionally gzip- or
//! zstd-compressed. Each request is admitted (`admission`) as it is read, inflated and before it is decoded.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tailgate_kafka::Topics;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::admission::{Admission, Compression, Format};
use crate::auth::{Failure, Identify};
use crate::error::ExportError;
use crate::metrics as m;
use crate::otlp::{response_json, Otlp};
use crate::sink::{KafkaSink, Payload};

const TRANSPORT: &str = "http";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

#[derive(Clone)]
struct Receiver {
    sink: KafkaSink,
    admission: Admission,
    topics: Topics,
    identify: Identify,
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
pub(crate) fn router(
    sink: KafkaSink,
    admission: Admission,
    topics: Topics,
    identify: Identify,
    cors_allowed_origins: &[String],
) -> Router {
    let receiver = Receiver { sink, admission, topics, identify };
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
    router.layer(CorsLayer::new().allow_origin(origins).allow_methods([axum::http::Method::POST]).allow_headers([
        header::CONTENT_TYPE,
        header::CONTENT_ENCODING,
        header::AUTHORIZATION,
    ]))
}

async fn export<S: Otlp>(State(receiver): State<Receiver>, headers: HeaderMap, body: Body) -> Response {
    // Until the Content-Type is known, errors are answered in protobuf, OTLP/HTTP's default.
    let mut encoding = Encoding::Protobuf;
    let outcome = async {
        encoding = content_type(&headers)?;
        // Who is writing, before a byte of the body is read.
        let tenant = receiver.identify.tenant(&headers)?;
        let compression = content_encoding(&headers)?;
        let admission = &receiver.admission;
        let mut permit = admission.permit();
        // The body is limited like what it inflates to: a compressed body is smaller.
        let raw = admission.read(body, admission.max_request_bytes(), &mut permit).await?;
        metrics::counter!(m::REQUEST_BYTES, "signal" => S::SIGNAL, "transport" => TRANSPORT)
            .increment(raw.len() as u64);
        let payload = match compression {
            Compression::Identity => raw,
            compression => {
                let payload = admission.inflate(compression, &raw, Vec::new(), &mut permit)?;
                // The share is shrunk to the records once they are made; the compressed body must be gone by then.
                drop(raw);
                payload
            }
        };
        let format = match encoding {
            Encoding::Protobuf if S::WIRE.is_some() => Format::ProtobufWire,
            Encoding::Protobuf => Format::Protobuf,
            Encoding::Json => Format::Json,
        };
        admission.rate_limit(&tenant, payload.len())?;
        admission.before_decoding(&mut permit, payload.len(), format)?;
        let request = match encoding {
            Encoding::Protobuf => Payload::Encoded(payload),
            Encoding::Json => {
                let request: S = crate::json::decode(&payload).map_err(ExportError::Decode)?;
                drop(payload);
                Payload::Decoded(request)
            }
        };
        receiver.sink.export(S::topic(&receiver.topics), S::SIGNAL, TRANSPORT, &tenant, request, permit).await
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
    if let ExportError::Unauthenticated(failure) = error {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, www_authenticate(*failure));
    }
    response
}

/// The challenge of RFC 6750: which scheme to use, and for a token that was presented, that it was not good.
fn www_authenticate(failure: Failure) -> HeaderValue {
    let challenge = match failure {
        Failure::Missing => "Bearer realm=\"tailgate\"".to_owned(),
        Failure::Malformed => "Bearer realm=\"tailgate\", error=\"invalid_request\"".to_owned(),
        failure => {
            format!("Bearer realm=\"tailgate\", error=\"invalid_token\", error_description=\"{}\"", failure.message())
        }
    };
    HeaderValue::from_str(&challenge).expect("the messages are ASCII without quotes")
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

fn content_encoding(headers: &HeaderMap) -> Result<Compression, ExportError> {
    let value = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    Compression::parse(value).ok_or_else(|| {
        ExportError::UnsupportedMediaType(format!("unsupported Content-Encoding `{value}`; use gzip or zstd"))
    })
}

/// Answers requests to unknown paths.
async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "unknown path; OTLP/HTTP serves /v1/traces, /v1/metrics and /v1/logs\n")
}

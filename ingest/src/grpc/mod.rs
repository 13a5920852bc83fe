//! OTLP/gRPC: the Trace, Metrics and Logs services on one port. A layer in front of tonic ([`Admit`]) admits each
//! request as its body arrives and inflates, and pays for its decoding, before tonic frames it; the services
//! ([`export`]) hand the handler the message's bytes, which the sink splits on their wire format.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::http::{HeaderMap, HeaderValue, Request as HttpRequest, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use tailgate_kafka::Topics;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Status};

use crate::admission::{Admission, Compression, Format};
use crate::auth::Identify;
use crate::budget::Permit;
use crate::error::{ExportError, Kind};
use crate::metrics as m;
use crate::otlp::Otlp;
use crate::sink::{KafkaSink, Payload};
use crate::tenant::Tenant;

mod export;

use export::{ExportService, Handler, Method};

const TRANSPORT: &str = "grpc";

#[derive(Clone)]
struct Receiver {
    sink: KafkaSink,
    topics: Topics,
}

impl Handler for Receiver {
    fn export<S: Method>(
        &self,
        request: Request<Vec<u8>>,
    ) -> BoxFuture<'static, Result<tonic::Response<S::Response>, Status>> {
        let receiver = self.clone();
        Box::pin(async move { receiver.serve::<S>(request).await })
    }
}

impl Receiver {
    async fn serve<S: Otlp>(&self, request: Request<Vec<u8>>) -> Result<tonic::Response<S::Response>, Status> {
        // [`Admit`] runs in front of every service of this server.
        let permit = request.extensions().get::<Admitted>().and_then(Admitted::take);
        let Some(permit) = permit else { return Err(Status::internal("the request was not admitted")) };
        let tenant = request.extensions().get::<Tenant>().cloned().unwrap_or_default();
        let request = Payload::<S>::Encoded(request.into_inner());
        let outcome = self.sink.export(S::topic(&self.topics), S::SIGNAL, TRANSPORT, &tenant, request, permit).await;
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

/// A request's share of the in-flight budget, handed by [`Admit`] to the handler in the request's extensions.
#[derive(Clone)]
struct Admitted(Arc<Mutex<Option<Permit>>>);

impl Admitted {
    fn take(&self) -> Option<Permit> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// The length of a gRPC message's prefix: a compressed flag and a big-endian `u32` length.
const MESSAGE_PREFIX: usize = 5;

/// The admission layer: reads a request's body (one unary gRPC message) paying for it as it arrives, inflates a
/// compressed message itself (paying per step, and handing tonic the plain message), pays for decoding it, and
/// only then lets tonic decode. A request that does not fit is answered here, before any of that work.
#[derive(Clone)]
struct Admit<S> {
    inner: S,
    admission: Admission,
    identify: Identify,
}

impl<S> tower::Service<HttpRequest<tonic::body::Body>> for Admit<S>
where
    S: tower::Service<HttpRequest<tonic::body::Body>, Response = Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest<tonic::body::Body>) -> Self::Future {
        // The clone is not ready; the ready one serves this request (tower's rule for services used in futures).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let admission = self.admission.clone();
        let identify = self.identify.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let signal = signal_of(parts.uri.path());
            // Who is writing, before a byte of the body is read.
            let admitted = match identify.tenant(&parts.headers) {
                Ok(tenant) => admit(&admission, &mut parts.headers, body, signal, &tenant).await.map(|a| (a, tenant)),
                Err(error) => Err(error),
            };
            match admitted {
                Ok(((message, permit), tenant)) => {
                    parts.extensions.insert(tenant);
                    parts.extensions.insert(Admitted(Arc::new(Mutex::new(Some(permit)))));
                    let body = tonic::body::Body::new(Full::new(Bytes::from(message)));
                    inner.call(HttpRequest::from_parts(parts, body)).await
                }
                Err(error) => {
                    metrics::counter!(m::REQUESTS, "signal" => signal, "transport" => TRANSPORT, "outcome" => error.reason())
                        .increment(1);
                    Ok(error.to_grpc().into_http())
                }
            }
        })
    }
}

/// The signal a gRPC path is for, as the metrics label it.
fn signal_of(path: &str) -> &'static str {
    if path.contains(".trace.") {
        "traces"
    } else if path.contains(".metrics.") {
        "metrics"
    } else if path.contains(".logs.") {
        "logs"
    } else {
        "unknown"
    }
}

/// Reads, inflates and pays for one gRPC message; returns it, uncompressed and with its prefix, and its share.
async fn admit(
    admission: &Admission,
    headers: &mut HeaderMap,
    body: tonic::body::Body,
    signal: &'static str,
    tenant: &Tenant,
) -> Result<(Vec<u8>, Permit), ExportError> {
    let mut permit = admission.permit();
    let limit = admission.max_request_bytes().saturating_add(MESSAGE_PREFIX);
    let frame = admission.read(body, limit, &mut permit).await?;
    metrics::counter!(m::REQUEST_BYTES, "signal" => signal, "transport" => TRANSPORT).increment(frame.len() as u64);
    let Some((prefix, message)) = frame.split_first_chunk::<MESSAGE_PREFIX>() else {
        return Err(ExportError::Decode("the request body is not a gRPC message".to_owned()));
    };
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if length != message.len() {
        return Err(ExportError::Decode(format!(
            "the request body holds {} bytes after its gRPC prefix, which announces {length}",
            message.len()
        )));
    }
    let encoding = headers.get("grpc-encoding").and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let frame = match (prefix[0], Compression::parse(encoding)) {
        (1, Some(compression)) if compression != Compression::Identity => {
            let mut plain = admission.inflate(compression, message, vec![0; MESSAGE_PREFIX], &mut permit)?;
            let length = u32::try_from(plain.len() - MESSAGE_PREFIX).expect("the limit is below 4GiB");
            plain[1..MESSAGE_PREFIX].copy_from_slice(&length.to_be_bytes());
            headers.remove("grpc-encoding");
            plain
        }
        // Not compressed, or with an encoding tonic refuses by itself (UNIMPLEMENTED, naming what it accepts).
        _ => frame,
    };
    admission.rate_limit(tenant, frame.len() - MESSAGE_PREFIX)?;
    let format = if matches!(signal, "traces" | "logs") { Format::ProtobufWire } else { Format::Protobuf };
    admission.before_decoding(&mut permit, frame.len() - MESSAGE_PREFIX, format)?;
    Ok((frame, permit))
}

/// Serves OTLP/gRPC on `listener` until `shutdown`, then finishes in-flight requests and returns.
pub(crate) async fn serve(
    listener: tailgate_tls::Listener,
    config: crate::config::GrpcConfig,
    sink: KafkaSink,
    admission: Admission,
    identify: Identify,
    topics: Topics,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let max_request_bytes = admission.max_request_bytes();
    let receiver = Receiver { sink, topics };
    let incoming = futures::stream::unfold(listener, |mut listener| async move {
        let (connection, _) = listener.accept().await;
        Some((Ok::<_, std::io::Error>(connection), listener))
    });
    let keepalive = &config.keepalive.server_parameters;
    let mut server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(keepalive.time.map(|time| time.get()))
        .http2_keepalive_timeout(Some(keepalive.timeout.get()));
    if let Some(age) = keepalive.max_connection_age {
        server = server.max_connection_age(age.get());
    }
    if let Some(grace) = keepalive.max_connection_age_grace {
        server = server.max_connection_age_grace(grace.get());
    }
    server
        .layer(tower::util::MapResponseLayer::new(remap_codec_errors))
        .layer(tower::layer::layer_fn(move |inner| Admit {
            inner,
            admission: admission.clone(),
            identify: identify.clone(),
        }))
        .add_service(ExportService::<ExportTraceServiceRequest, _>::new(receiver.clone(), max_request_bytes))
        .add_service(ExportService::<ExportMetricsServiceRequest, _>::new(receiver.clone(), max_request_bytes))
        .add_service(ExportService::<ExportLogsServiceRequest, _>::new(receiver, max_request_bytes))
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

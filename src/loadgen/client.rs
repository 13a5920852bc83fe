//! The OTLP client: one export request over gRPC or HTTP, retried as OpenTelemetry SDKs retry — with back-off, a
//! bounded number of times, and only what the OTLP specification calls retryable ([`tailgate_proto::retry`]).

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tailgate_proto::retry::{grpc_is_retryable, http_is_retryable};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::{LoadgenArgs, Protocol};

/// Attempts per request before giving up, as OpenTelemetry SDKs do (they retry for a bounded time, then drop).
const ATTEMPTS: u32 = 6;

/// An OTLP export request: what the client needs to know of its signal.
pub(super) trait Export: tailgate_proto::Signal + Clone + Send + Sync + 'static {
    type Response: Message + Default + Send + 'static;
    /// `traces`, `logs` or `metrics`, in progress lines.
    const NAME: &'static str;
    /// The OTLP/HTTP path.
    const HTTP_PATH: &'static str;
    /// The OTLP/gRPC method.
    const GRPC_PATH: &'static str;
    /// The items the response says were rejected (partial success).
    fn rejected(response: &Self::Response) -> i64;
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const NAME: &'static str = "traces";
    const HTTP_PATH: &'static str = "/v1/traces";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    fn rejected(response: &ExportTraceServiceResponse) -> i64 {
        response.partial_success.as_ref().map_or(0, |p| p.rejected_spans)
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const NAME: &'static str = "logs";
    const HTTP_PATH: &'static str = "/v1/logs";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    fn rejected(response: &ExportLogsServiceResponse) -> i64 {
        response.partial_success.as_ref().map_or(0, |p| p.rejected_log_records)
    }
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const NAME: &'static str = "metrics";
    const HTTP_PATH: &'static str = "/v1/metrics";
    const GRPC_PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    fn rejected(response: &ExportMetricsServiceResponse) -> i64 {
        response.partial_success.as_ref().map_or(0, |p| p.rejected_data_points)
    }
}

/// What became of one request, retries included.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Outcome {
    /// Items the gateway acknowledged.
    pub acked: u64,
    /// Items it refused: inside an acknowledgement (partial success), or all of them on a permanent error.
    pub rejected: u64,
    pub retries: u64,
    /// Given up on: out of attempts, or stopped while waiting to retry.
    pub failed: bool,
}

/// The result of one export attempt.
enum Sent {
    /// Acknowledged; this many items were refused inside it.
    Ok {
        rejected: u64,
    },
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Refused(String),
}

type HttpClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

pub(super) enum Client {
    Grpc(tonic::client::Grpc<Channel>),
    Http { client: HttpClient, base: String },
}

impl Client {
    pub(super) fn new(args: &LoadgenArgs) -> anyhow::Result<Client> {
        let endpoint = args.endpoint.trim_start_matches("http://").trim_end_matches('/');
        Ok(match args.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy();
                Client::Grpc(tonic::client::Grpc::new(channel))
            }
            Protocol::Http => Client::Http {
                client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(HttpConnector::new()),
                base: format!("http://{endpoint}"),
            },
        })
    }

    /// Sends `request` until acknowledged, refused, out of attempts, or `stop`; progress goes to `out`.
    pub(super) async fn send<R: Export>(
        &mut self,
        mut request: R,
        out: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) -> Outcome {
        let what = R::NAME;
        let items = tailgate_proto::count_items(&mut request) as u64;
        let mut outcome = Outcome::default();
        let mut backoff = Duration::from_millis(500);
        for n in 1..=ATTEMPTS {
            match self.attempt(&request).await {
                Sent::Ok { rejected } => {
                    outcome.rejected = rejected.min(items);
                    outcome.acked = items - outcome.rejected;
                    return outcome;
                }
                Sent::Refused(reason) => {
                    let _ = writeln!(out, "gateway refused {items} {what}: {reason}");
                    outcome.rejected = items;
                    return outcome;
                }
                Sent::Retry { reason, after } if n < ATTEMPTS => {
                    let wait = after.unwrap_or(backoff).max(backoff);
                    let _ =
                        writeln!(out, "gateway did not take {what} ({reason}); retry {n}/{} in {wait:?}", ATTEMPTS - 1);
                    outcome.retries += 1;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Sent::Retry { reason, .. } => {
                    let _ = writeln!(out, "giving up on {items} {what} after {ATTEMPTS} attempts: {reason}");
                }
            }
        }
        outcome.failed = true;
        outcome
    }

    async fn attempt<R: Export>(&mut self, request: &R) -> Sent {
        match self {
            Client::Grpc(grpc) => match export_grpc(grpc, request.clone()).await {
                Ok(response) => Sent::Ok { rejected: R::rejected(&response).max(0) as u64 },
                Err(status) => classify_grpc(&status),
            },
            Client::Http { client, base } => export_http::<R>(client, base, request.encode_to_vec()).await,
        }
    }
}

/// What the generated `*ServiceClient::export` does, for any of the three services.
async fn export_grpc<R: Export>(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: R,
) -> Result<R::Response, tonic::Status> {
    grpc.ready().await.map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<R, R::Response>::default();
    let response = grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(R::GRPC_PATH), codec).await?;
    Ok(response.into_inner())
}

fn classify_grpc(status: &tonic::Status) -> Sent {
    let retry_info = tailgate_proto::status::Status::decode(status.details()).ok().and_then(|s| s.retry_delay());
    let reason = format!("{:?}: {}", status.code(), status.message());
    if grpc_is_retryable(status.code() as i32, retry_info.is_some()) {
        Sent::Retry { reason, after: retry_info }
    } else {
        Sent::Refused(reason)
    }
}

async fn export_http<R: Export>(client: &HttpClient, base: &str, body: Vec<u8>) -> Sent {
    let request = match hyper::Request::post(format!("{base}{}", R::HTTP_PATH))
        .header(hyper::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
    {
        Ok(request) => request,
        Err(error) => return Sent::Refused(error.to_string()),
    };
    let response = match tokio::time::timeout(Duration::from_secs(10), client.request(request)).await {
        Err(_) => return Sent::Retry { reason: "timed out".into(), after: None },
        Ok(Err(error)) => return Sent::Retry { reason: format!("unreachable: {error}"), after: None },
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    let after = response
        .headers()
        .get(hyper::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    match status.as_u16() {
        200 => Sent::Ok { rejected: R::Response::decode(body).map(|r| R::rejected(&r)).unwrap_or(0).max(0) as u64 },
        code if http_is_retryable(code) => Sent::Retry { reason: format!("HTTP {status}"), after },
        _ => Sent::Refused(format!("HTTP {status}")),
    }
}

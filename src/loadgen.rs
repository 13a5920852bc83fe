//! `tailgate loadgen`: the checkout flow of six services as real OTLP — traces, logs that carry their trace and
//! span IDs, and business metrics — at a steady rate, over gRPC or HTTP. It counts only what the gateway
//! acknowledged, retries like an SDK (with back-off, on UNAVAILABLE / RESOURCE_EXHAUSTED / 429 / 503), and says
//! clearly when the gateway is down.
//!
//! One checkout trace: `gateway POST /checkout` → `cart` → `inventory` (+ its `SELECT stock` database span) →
//! `payments` → `notifications` → `shipping`: 7 spans, 7 log lines. An error trace fails in `payments` ("card
//! declined"); a slow trace's inventory query takes 2.5 s. Business metrics (service `checkout`, cumulative):
//! `checkout.completed`, `checkout.value` (histogram, cents), `cart.abandoned`.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// The services of one checkout, in call order.
pub const SERVICES: [&str; 6] = ["gateway", "cart", "inventory", "payments", "notifications", "shipping"];
/// Spans (and log lines) per checkout trace: one per service plus the inventory database query.
pub const SPANS_PER_TRACE: u64 = 7;
/// How long a slow trace's inventory query takes.
pub const SLOW_QUERY: Duration = Duration::from_millis(2500);

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Grpc,
    Http,
}

#[derive(Clone, Debug, clap::Args)]
pub struct LoadgenArgs {
    /// The gateway: HOST:PORT (4317 for gRPC, 4318 for HTTP).
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub endpoint: String,
    #[arg(long, value_enum, default_value = "grpc")]
    pub protocol: Protocol,
    /// Checkout traces per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// How long to send, e.g. 30s, 5m.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Share of checkouts whose payment fails (0..1).
    #[arg(long, default_value_t = 0.05)]
    pub error_rate: f64,
    /// Share of checkouts with a slow inventory database query (0..1).
    #[arg(long, default_value_t = 0.05)]
    pub slow_rate: f64,
    /// Approximate encoded size of each span, padded with an attribute.
    #[arg(long, default_value_t = 300)]
    pub span_bytes: usize,
    /// Seed for the error/slow choices and IDs: the same seed sends the same checkouts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What was acknowledged, and what wasn't.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub traces: u64,
    pub error_traces: u64,
    pub slow_traces: u64,
    /// Spans, log records and metric points the gateway acknowledged.
    pub spans_acked: u64,
    pub logs_acked: u64,
    pub points_acked: u64,
    /// Items the gateway refused (partial success, or a permanent error).
    pub rejected: u64,
    /// Requests given up after the SDK-like retries.
    pub failed_requests: u64,
    pub retries: u64,
}

/// A generated checkout.
struct Checkout {
    trace_id: Vec<u8>,
    error: bool,
    slow: bool,
    value_cents: u64,
}

pub async fn run(
    args: &LoadgenArgs,
    progress: &mut (dyn Write + Send),
    stop: CancellationToken,
) -> anyhow::Result<Summary> {
    anyhow::ensure!(args.rate > 0.0, "--rate must be above 0");
    anyhow::ensure!((0.0..=1.0).contains(&args.error_rate), "--error-rate must be between 0 and 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.slow_rate), "--slow-rate must be between 0 and 1");
    let mut client = Client::new(args)?;
    let mut rng = fastrand::Rng::with_seed(args.seed);
    let mut summary = Summary::default();
    let mut totals = BusinessTotals::default();
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_metrics = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    writeln!(
        progress,
        "loadgen: {:.1} checkouts/s for {:?} to {} over {:?}",
        args.rate, args.duration, args.endpoint, args.protocol
    )?;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = started.elapsed().min(args.duration);
        let due = (elapsed.as_secs_f64() * args.rate).floor() as u64;
        if due > summary.traces {
            let checkouts: Vec<Checkout> = (summary.traces..due)
                .map(|_| Checkout {
                    trace_id: rng.u128(1..).to_be_bytes().to_vec(),
                    error: rng.f64() < args.error_rate,
                    slow: rng.f64() < args.slow_rate,
                    value_cents: rng.u64(500..50_000),
                })
                .collect();
            summary.traces = due;
            for c in &checkouts {
                summary.error_traces += c.error as u64;
                summary.slow_traces += c.slow as u64;
                totals.add(c);
            }
            let (traces, logs) = build(&checkouts, args.span_bytes, &mut rng);
            client.send_traces(traces, &mut summary, progress, &stop).await;
            client.send_logs(logs, &mut summary, progress, &stop).await;
        }
        let finished = started.elapsed() >= args.duration;
        if last_metrics.elapsed() >= Duration::from_secs(1) || finished {
            client.send_metrics(totals.request(), &mut summary, progress, &stop).await;
            last_metrics = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let rate = summary.traces as f64 / started.elapsed().as_secs_f64().max(0.001);
            writeln!(
                progress,
                "sent {} checkouts ({} errors, {} slow), acked {} spans {} logs {} points, rejected {}, failed requests {}, {rate:.1} checkouts/s",
                summary.traces, summary.error_traces, summary.slow_traces, summary.spans_acked, summary.logs_acked,
                summary.points_acked, summary.rejected, summary.failed_requests
            )?;
            last_report = Instant::now();
        }
        if finished {
            break;
        }
    }
    writeln!(
        progress,
        "loadgen done: {} checkouts ({} errors, {} slow); acknowledged {} spans, {} log records, {} metric points; rejected {}; {} requests failed after retries; {} retries",
        summary.traces, summary.error_traces, summary.slow_traces, summary.spans_acked, summary.logs_acked,
        summary.points_acked, summary.rejected, summary.failed_requests, summary.retries
    )?;
    Ok(summary)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }) }
}

fn text(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            text("service.name", service),
            text("service.namespace", "shop"),
            text("service.instance.id", &format!("{service}-1")),
            text("deployment.environment", "loadgen"),
        ],
        ..Default::default()
    })
}

/// The spans and log lines of `checkouts`, one resource per service.
fn build(
    checkouts: &[Checkout],
    span_bytes: usize,
    rng: &mut fastrand::Rng,
) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let mut spans: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut logs: Vec<Vec<LogRecord>> = vec![Vec::new(); SERVICES.len()];
    let padding = "x".repeat(span_bytes.saturating_sub(220));
    for checkout in checkouts {
        let end = now_ns();
        let slow = if checkout.slow { SLOW_QUERY.as_nanos() as u64 } else { 12_000_000 };
        let total = slow + 180_000_000;
        let start = end - total;
        let ids: Vec<Vec<u8>> = (0..SPANS_PER_TRACE).map(|_| rng.u64(1..).to_be_bytes().to_vec()).collect();
        let plan: [Step; 7] = [
            (0, "POST /checkout", span::SpanKind::Server as i32, None, 0, total),
            (1, "GetCart", span::SpanKind::Server as i32, Some(0), 5_000_000, 20_000_000),
            (2, "ReserveStock", span::SpanKind::Server as i32, Some(0), 30_000_000, slow + 10_000_000),
            (2, "SELECT stock", span::SpanKind::Client as i32, Some(2), 33_000_000, slow),
            (3, "Charge", span::SpanKind::Server as i32, Some(0), slow + 45_000_000, 80_000_000),
            (4, "SendConfirmation", span::SpanKind::Server as i32, Some(0), slow + 130_000_000, 20_000_000),
            (5, "CreateShipment", span::SpanKind::Server as i32, Some(0), slow + 155_000_000, 20_000_000),
        ];
        for (i, (service, name, kind, parent, offset, duration)) in plan.into_iter().enumerate() {
            let failed = checkout.error && (i == 4 || i == 0);
            let mut attributes = vec![text("order.id", &hex::encode(&checkout.trace_id[..6]))];
            if i == 3 {
                attributes.push(text("db.system", "postgresql"));
                attributes.push(text("db.query.text", "SELECT quantity FROM stock WHERE sku = $1 FOR UPDATE"));
            }
            if i == 0 {
                attributes.push(text("http.route", "/checkout"));
                attributes.push(kv(
                    "http.response.status_code",
                    any_value::Value::IntValue(if checkout.error { 502 } else { 200 }),
                ));
            }
            if !padding.is_empty() {
                attributes.push(text("loadgen.padding", &padding));
            }
            spans[service].push(Span {
                trace_id: checkout.trace_id.clone(),
                span_id: ids[i].clone(),
                parent_span_id: parent.map(|p| ids[p].clone()).unwrap_or_default(),
                name: name.into(),
                kind,
                start_time_unix_nano: start + offset,
                end_time_unix_nano: start + offset + duration,
                attributes,
                status: failed
                    .then(|| Status { code: status::StatusCode::Error as i32, message: "card declined".into() }),
                ..Default::default()
            });
            let (severity, body) = match (failed, i) {
                (true, _) => {
                    (17, format!("{name} failed: card declined for order {}", hex::encode(&checkout.trace_id[..6])))
                }
                (false, 3) if checkout.slow => (13, format!("slow query: SELECT stock took {} ms", slow / 1_000_000)),
                _ => (9, format!("{name} ok")),
            };
            logs[service].push(LogRecord {
                time_unix_nano: start + offset + duration,
                observed_time_unix_nano: start + offset + duration,
                severity_number: severity,
                severity_text: match severity {
                    17 => "ERROR",
                    13 => "WARN",
                    _ => "INFO",
                }
                .into(),
                body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
                trace_id: checkout.trace_id.clone(),
                span_id: ids[i].clone(),
                ..Default::default()
            });
        }
    }
    let scope = || Some(InstrumentationScope { name: "tailgate.loadgen".into(), ..Default::default() });
    let traces = ExportTraceServiceRequest {
        resource_spans: SERVICES
            .iter()
            .zip(spans)
            .filter(|(_, spans)| !spans.is_empty())
            .map(|(service, spans)| ResourceSpans {
                resource: resource(service),
                scope_spans: vec![ScopeSpans { scope: scope(), spans, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: SERVICES
            .iter()
            .zip(logs)
            .filter(|(_, logs)| !logs.is_empty())
            .map(|(service, log_records)| ResourceLogs {
                resource: resource(service),
                scope_logs: vec![ScopeLogs { scope: scope(), log_records, ..Default::default() }],
                ..Default::default()
            })
            .collect(),
    };
    (traces, logs)
}

/// One span of the flow: service index, name, kind, parent's index, start offset and duration in nanoseconds.
type Step = (usize, &'static str, i32, Option<usize>, u64, u64);

/// Cumulative business metrics since the start.
#[derive(Default)]
struct BusinessTotals {
    completed: u64,
    abandoned: u64,
    value_sum: f64,
    value_buckets: [u64; 6],
    start_ns: u64,
}

/// `checkout.value` bounds, in cents.
const VALUE_BOUNDS: [f64; 5] = [1000.0, 2500.0, 5000.0, 10000.0, 25000.0];

impl BusinessTotals {
    fn add(&mut self, checkout: &Checkout) {
        if self.start_ns == 0 {
            self.start_ns = now_ns();
        }
        if checkout.error {
            self.abandoned += 1;
            return;
        }
        self.completed += 1;
        self.value_sum += checkout.value_cents as f64;
        let bucket = VALUE_BOUNDS.iter().position(|b| checkout.value_cents as f64 <= *b).unwrap_or(VALUE_BOUNDS.len());
        self.value_buckets[bucket] += 1;
    }

    /// Three points: `checkout.completed`, `cart.abandoned`, `checkout.value`.
    fn request(&self) -> ExportMetricsServiceRequest {
        let (start, now) = (self.start_ns.max(1), now_ns());
        let counter = |name: &str, unit: &str, value: u64| Metric {
            name: name.into(),
            unit: unit.into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    value: Some(number_data_point::Value::AsInt(value as i64)),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let value = Metric {
            name: "checkout.value".into(),
            unit: "{cent}".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: self.completed,
                    sum: Some(self.value_sum),
                    bucket_counts: self.value_buckets.to_vec(),
                    explicit_bounds: VALUE_BOUNDS.to_vec(),
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("checkout"),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope { name: "tailgate.loadgen".into(), ..Default::default() }),
                    metrics: vec![
                        counter("checkout.completed", "{checkout}", self.completed),
                        counter("cart.abandoned", "{cart}", self.abandoned),
                        value,
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
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

enum Client {
    Grpc {
        traces: TraceServiceClient<Channel>,
        logs: LogsServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
    },
    Http {
        client: hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
        base: String,
    },
}

/// Attempts per request before giving up, as OpenTelemetry SDKs do (they retry for a bounded time, then drop).
const ATTEMPTS: u32 = 6;

impl Client {
    fn new(args: &LoadgenArgs) -> anyhow::Result<Client> {
        let endpoint = args.endpoint.trim_start_matches("http://").trim_end_matches('/');
        Ok(match args.protocol {
            Protocol::Grpc => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(10))
                    .connect_lazy();
                Client::Grpc {
                    traces: TraceServiceClient::new(channel.clone()),
                    logs: LogsServiceClient::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                }
            }
            Protocol::Http => Client::Http {
                client: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(hyper_util::client::legacy::connect::HttpConnector::new()),
                base: format!("http://{endpoint}"),
            },
        })
    }

    async fn send_traces(
        &mut self,
        request: ExportTraceServiceRequest,
        summary: &mut Summary,
        out: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) {
        let items: u64 = request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum();
        let acked = self
            .with_retries("traces", items, summary, out, stop, |client| {
                let request = request.clone();
                Box::pin(async move {
                    match client {
                        Client::Grpc { traces, .. } => grpc(
                            traces
                                .export(request)
                                .await
                                .map(|r| r.into_inner().partial_success.map_or(0, |p| p.rejected_spans)),
                        ),
                        Client::Http { client, base } => {
                            http::<ExportTraceServiceResponse>(
                                client,
                                base,
                                "/v1/traces",
                                request.encode_to_vec(),
                                |r| r.partial_success.map_or(0, |p| p.rejected_spans),
                            )
                            .await
                        }
                    }
                })
            })
            .await;
        summary.spans_acked += acked;
    }

    async fn send_logs(
        &mut self,
        request: ExportLogsServiceRequest,
        summary: &mut Summary,
        out: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) {
        let items: u64 =
            request.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len() as u64).sum();
        let acked = self
            .with_retries("logs", items, summary, out, stop, |client| {
                let request = request.clone();
                Box::pin(async move {
                    match client {
                        Client::Grpc { logs, .. } => grpc(
                            logs.export(request)
                                .await
                                .map(|r| r.into_inner().partial_success.map_or(0, |p| p.rejected_log_records)),
                        ),
                        Client::Http { client, base } => {
                            http::<ExportLogsServiceResponse>(client, base, "/v1/logs", request.encode_to_vec(), |r| {
                                r.partial_success.map_or(0, |p| p.rejected_log_records)
                            })
                            .await
                        }
                    }
                })
            })
            .await;
        summary.logs_acked += acked;
    }

    async fn send_metrics(
        &mut self,
        request: ExportMetricsServiceRequest,
        summary: &mut Summary,
        out: &mut (dyn Write + Send),
        stop: &CancellationToken,
    ) {
        let acked = self
            .with_retries("metrics", 3, summary, out, stop, |client| {
                let request = request.clone();
                Box::pin(async move {
                    match client {
                        Client::Grpc { metrics, .. } => grpc(
                            metrics
                                .export(request)
                                .await
                                .map(|r| r.into_inner().partial_success.map_or(0, |p| p.rejected_data_points)),
                        ),
                        Client::Http { client, base } => {
                            http::<ExportMetricsServiceResponse>(
                                client,
                                base,
                                "/v1/metrics",
                                request.encode_to_vec(),
                                |r| r.partial_success.map_or(0, |p| p.rejected_data_points),
                            )
                            .await
                        }
                    }
                })
            })
            .await;
        summary.points_acked += acked;
    }

    /// Sends until acknowledged, refused, or out of attempts; returns the items acknowledged.
    async fn with_retries(
        &mut self,
        what: &str,
        items: u64,
        summary: &mut Summary,
        out: &mut (dyn Write + Send),
        stop: &CancellationToken,
        mut attempt: impl FnMut(&mut Client) -> futures::future::BoxFuture<'_, Sent>,
    ) -> u64 {
        let mut backoff = Duration::from_millis(500);
        for n in 1..=ATTEMPTS {
            match attempt(self).await {
                Sent::Ok { rejected } => {
                    let rejected = rejected.min(items);
                    summary.rejected += rejected;
                    return items - rejected;
                }
                Sent::Refused(reason) => {
                    let _ = writeln!(out, "gateway refused {items} {what}: {reason}");
                    summary.rejected += items;
                    return 0;
                }
                Sent::Retry { reason, after } if n < ATTEMPTS => {
                    let _ = writeln!(
                        out,
                        "gateway did not take {what} ({reason}); retry {n}/{} in {:?}",
                        ATTEMPTS - 1,
                        after.unwrap_or(backoff).max(backoff)
                    );
                    summary.retries += 1;
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(after.unwrap_or(backoff).max(backoff)) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Sent::Retry { reason, .. } => {
                    let _ = writeln!(out, "giving up on {items} {what} after {ATTEMPTS} attempts: {reason}");
                }
            }
        }
        summary.failed_requests += 1;
        0
    }
}

fn grpc(result: Result<i64, tonic::Status>) -> Sent {
    use tonic::Code;
    match result {
        Ok(rejected) => Sent::Ok { rejected: rejected.max(0) as u64 },
        Err(status) => {
            let after = tailgate_proto::status::Status::decode(status.details()).ok().and_then(|s| s.retry_delay());
            let reason = format!("{:?}: {}", status.code(), status.message());
            match status.code() {
                Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => {
                    Sent::Retry { reason, after }
                }
                Code::ResourceExhausted if after.is_some() => Sent::Retry { reason, after },
                _ => Sent::Refused(reason),
            }
        }
    }
}

async fn http<R: Message + Default>(
    client: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: &str,
    path: &str,
    body: Vec<u8>,
    rejected: impl FnOnce(R) -> i64,
) -> Sent {
    let request = match hyper::Request::post(format!("{base}{path}"))
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
        200 => Sent::Ok { rejected: R::decode(body).map(rejected).unwrap_or(0).max(0) as u64 },
        429 | 502 | 503 | 504 => Sent::Retry { reason: format!("HTTP {status}"), after },
        _ => Sent::Refused(format!("HTTP {status}")),
    }
}

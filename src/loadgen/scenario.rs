//! The checkout flow, as auto-instrumentation records it. One checkout trace: `gateway POST /checkout` (SERVER)
//! calls `cart`, `inventory`, `payments`, `notifications` and `shipping`, each call a gateway CLIENT span around the
//! callee's SERVER span; `inventory` queries PostgreSQL (`SELECT stock`, a CLIENT span with `db.system`): 12 spans,
//! 12 log lines. An error trace fails in `payments` ("card declined", on both sides of the call); a slow trace's
//! inventory query takes 2.5 s. Business metrics (service `checkout`,
//! cumulative): `checkout.completed`, `checkout.value` (histogram, cents), `cart.abandoned`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};

/// The services of one checkout, in call order.
pub const SERVICES: [&str; 6] = ["gateway", "cart", "inventory", "payments", "notifications", "shipping"];
/// Spans (and log lines) per checkout trace: the gateway's SERVER span, a CLIENT and a SERVER span per call to the
/// five other services, and the inventory database query.
pub const SPANS_PER_TRACE: u64 = 12;
/// Which step of the plan fails in an error trace: the gateway's call to payments, payments' `Charge`, and the
/// checkout itself.
const FAILING_STEPS: [usize; 3] = [0, 6, 7];
/// The step of the database query.
const QUERY_STEP: usize = 5;
/// How long a slow trace's inventory query takes.
pub const SLOW_QUERY: Duration = Duration::from_millis(2500);

/// A generated checkout.
pub(super) struct Checkout {
    trace_id: Vec<u8>,
    /// The payment fails.
    pub error: bool,
    /// The inventory query takes [`SLOW_QUERY`].
    pub slow: bool,
    value_cents: u64,
}

impl Checkout {
    /// The next checkout `rng` draws: the same seed draws the same checkouts.
    pub(super) fn draw(rng: &mut fastrand::Rng, error_rate: f64, slow_rate: f64) -> Checkout {
        Checkout {
            trace_id: rng.u128(1..).to_be_bytes().to_vec(),
            error: rng.f64() < error_rate,
            slow: rng.f64() < slow_rate,
            value_cents: rng.u64(500..50_000),
        }
    }
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
pub(super) fn build(
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
        let (client, server) = (span::SpanKind::Client as i32, span::SpanKind::Server as i32);
        // A call: the gateway's CLIENT span starts 1 ms before and ends 1 ms after the callee's SERVER span.
        let plan: [Step; 12] = [
            (0, "POST /checkout", server, None, 0, total),
            (0, "GET cart", client, Some(0), 4_000_000, 22_000_000),
            (1, "GetCart", server, Some(1), 5_000_000, 20_000_000),
            (0, "POST inventory/reserve", client, Some(0), 29_000_000, slow + 12_000_000),
            (2, "ReserveStock", server, Some(3), 30_000_000, slow + 10_000_000),
            (2, "SELECT stock", client, Some(4), 33_000_000, slow),
            (0, "POST payments/charge", client, Some(0), slow + 44_000_000, 82_000_000),
            (3, "Charge", server, Some(6), slow + 45_000_000, 80_000_000),
            (0, "POST notifications/send", client, Some(0), slow + 129_000_000, 22_000_000),
            (4, "SendConfirmation", server, Some(8), slow + 130_000_000, 20_000_000),
            (0, "POST shipping/create", client, Some(0), slow + 154_000_000, 22_000_000),
            (5, "CreateShipment", server, Some(10), slow + 155_000_000, 20_000_000),
        ];
        for (i, (service, name, kind, parent, offset, duration)) in plan.into_iter().enumerate() {
            let failed = checkout.error && FAILING_STEPS.contains(&i);
            let mut attributes = vec![text("order.id", &hex::encode(&checkout.trace_id[..6]))];
            if i == QUERY_STEP {
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
                (false, QUERY_STEP) if checkout.slow => {
                    (13, format!("slow query: SELECT stock took {} ms", slow / 1_000_000))
                }
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
pub(super) struct BusinessTotals {
    completed: u64,
    abandoned: u64,
    value_sum: f64,
    value_buckets: [u64; 6],
    start_ns: u64,
}

/// `checkout.value` bounds, in cents.
const VALUE_BOUNDS: [f64; 5] = [1000.0, 2500.0, 5000.0, 10000.0, 25000.0];

impl BusinessTotals {
    pub(super) fn add(&mut self, checkout: &Checkout) {
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
    pub(super) fn request(&self) -> ExportMetricsServiceRequest {
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

//! How the exporters say who they are, and whose data they send, to a backend — what `SECURITY.md` promises: each
//! tenant's data goes as that tenant (Jaeger/Tempo gRPC metadata `x-scope-orgid`, remote-write the header named by
//! `tenant_header`; the default tenant's with none), basic credentials arrive as `Basic base64(user:pass)`, a TLS
//! backend is checked under `server_name_override`, and a backend's answer is read to at most 64 KiB, whatever it
//! sends. Records are written straight to the topics, with the headers a gateway writes, so each test controls
//! exactly which tenant every record is.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use rdkafka::message::Header;
use rdkafka::producer::FutureRecord;
use tailgate_exporters::delivery::credentials::{BackendAuth, BasicAuth};
use tailgate_exporters::jaeger::JaegerConfig;
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::prometheus::PrometheusConfig;
use tailgate_exporters::ExportersConfig;
use tailgate_kafka::KafkaConfig;
use tailgate_proto::headers;
use tailgate_proto::prometheus::WriteRequest;

use crate::harness::backends::{LokiReceiver, TraceReceiver};
use crate::harness::certs::Pki;
use crate::harness::otlp::{self, kv, logs_request, now_ns};
use crate::harness::{self, eventually};

/// Writes `value` to partition 0 of `topic` with the headers a gateway writes, as `tenant`'s record (`None`: the
/// default tenant's, which carries no tenant header).
async fn produce(kafka: &KafkaConfig, topic: &str, tenant: Option<&str>, value: &[u8]) {
    let producer = harness::kafka::producer(&kafka.brokers);
    let mut owned = tailgate_kafka::contract_headers(headers::ENCODING_OTLP_PROTO);
    if let Some(tenant) = tenant {
        owned = owned.insert(Header { key: headers::TENANT, value: Some(tenant) });
    }
    let record = FutureRecord::<(), _>::to(topic).partition(0).payload(value).headers(owned);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("the broker takes the record");
}

/// A trace request of `count` spans of trace `trace`.
fn spans(trace: u8, count: u8) -> Vec<u8> {
    let spans = (1..=count)
        .map(|s| Span { trace_id: vec![trace; 16], span_id: vec![s; 8], name: "checkout".into(), ..Default::default() })
        .collect();
    harness::trace_request(spans).encode_to_vec()
}

/// Each tenant's spans reach Jaeger (or Tempo) as that tenant, in gRPC metadata `x-scope-orgid`; the default
/// tenant's without it. Three records, one per tenant, of 2, 1 and 3 spans: exactly three requests, each one
/// tenant's spans under that tenant's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_spans_reach_jaeger_as_that_tenant_in_x_scope_orgid() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let jaeger = TraceReceiver::start().await;
    let exporters = ExportersConfig {
        jaeger: Some(JaegerConfig {
            endpoint: jaeger.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::JAEGER).await;
    // Span counts that differ per tenant, so each request's count says whose spans it carried.
    produce(&kafka, &kafka.topics.sampled_spans, Some("cart"), &spans(1, 2)).await;
    produce(&kafka, &kafka.topics.sampled_spans, Some("payments"), &spans(2, 1)).await;
    produce(&kafka, &kafka.topics.sampled_spans, None, &spans(3, 3)).await;

    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 3).await, "{:?}", exporter.stats);
    let mut requests: Vec<(Option<String>, Option<String>, usize)> = jaeger
        .traces
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| (r.tenant.clone(), r.authorization.clone(), r.spans))
        .collect();
    requests.sort();
    let expected: [(Option<String>, Option<String>, usize); 3] =
        [(None, None, 3), (Some("cart".to_owned()), None, 2), (Some("payments".to_owned()), None, 1)];
    assert_eq!(requests, expected, "one request per tenant, named in x-scope-orgid; the default tenant's names none");
    exporter.stop().await;
}

/// One remote-write request as a Mimir-like receiver saw it.
#[derive(Clone, Debug, PartialEq)]
struct Write {
    /// Every value of the tenant header the receiver was started with.
    tenant: Vec<String>,
    /// Every value of `X-Scope-OrgID`.
    scope_orgid: Vec<String>,
    authorization: Option<String>,
    /// Each sample: its series' labels (sorted by name) and its value.
    samples: Vec<(Vec<(String, String)>, f64)>,
}

#[derive(Default)]
struct MimirState {
    /// Every request accepted, in order.
    writes: Vec<Write>,
    /// Every request that arrived, refused ones too.
    attempts: usize,
    /// Set: the next request is answered 400 with a body that never ends, and this flag is raised when the server
    /// drops that body (the client closed the connection).
    refuse_next: Option<Endless>,
}

/// A remote-write receiver (`POST /api/v1/push`, snappy + `prometheus.WriteRequest`) that records the headers a
/// multi-tenant one (Mimir, Cortex, Thanos) reads, and can answer one request with an endless refusal.
struct Mimir {
    addr: SocketAddr,
    state: Arc<Mutex<MimirState>>,
}

impl Mimir {
    /// Records the values of `tenant_header` on every request.
    async fn start(tenant_header: &str) -> Mimir {
        let state = Arc::new(Mutex::new(MimirState::default()));
        let shared = Arc::clone(&state);
        let tenant_header = tenant_header.to_ascii_lowercase();
        let app = axum::Router::new().route(
            "/api/v1/push",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (state, tenant_header) = (Arc::clone(&shared), tenant_header.clone());
                async move { write(&state, &tenant_header, &headers, &body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Mimir { addr, state }
    }

    fn endpoint(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    /// Answers the next request 400 with an endless body; says when the server dropped that body, and how much of it
    /// was sent.
    fn refuse_next_endlessly(&self) -> Endless {
        let endless = Endless::default();
        self.state.lock().unwrap().refuse_next = Some(endless.clone());
        endless
    }
}

/// The push handler: the endless refusal if one is due, else the write decoded and recorded with its headers.
fn write(state: &Mutex<MimirState>, tenant_header: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut state = state.lock().unwrap();
    state.attempts += 1;
    if let Some(endless) = state.refuse_next.take() {
        return (StatusCode::BAD_REQUEST, endless_refusal(endless)).into_response();
    }
    let request =
        snap::raw::Decoder::new().decompress_vec(body).ok().and_then(|raw| WriteRequest::decode(raw.as_slice()).ok());
    let Some(request) = request else {
        return (StatusCode::BAD_REQUEST, "not snappy-compressed remote-write protobuf").into_response();
    };
    let all = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect()
    };
    let mut samples = Vec::new();
    for series in &request.timeseries {
        let mut labels: Vec<(String, String)> =
            series.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        labels.sort();
        samples.extend(series.samples.iter().map(|s| (labels.clone(), s.value)));
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    state.writes.push(Write { tenant: all(tenant_header), scope_orgid: all("x-scope-orgid"), authorization, samples });
    // What Prometheus and Mimir answer to a stored write.
    StatusCode::NO_CONTENT.into_response()
}

/// How an endless refusal starts: a refusal of the data itself (a 400 the exporter dead-letters), not of a sample's
/// time (which it would answer by cutting the request in two).
const REFUSAL: &str = "received a series with an invalid label: 'bad label' ";

/// What follows [`REFUSAL`], over and over.
static FILLER: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// An endless refusal's record: whether the server dropped the body (because the client closed the connection), and
/// the bytes handed to the connection until then.
#[derive(Clone, Default)]
struct Endless {
    dropped: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
}

/// Raises `dropped` when the body is dropped.
struct DropFlag(Endless);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

/// [`REFUSAL`], then [`FILLER`] for ever: far more than any exporter could hold, and more than it could read within
/// its request timeout.
fn endless_refusal(endless: Endless) -> Body {
    let chunks = futures::stream::unfold((true, DropFlag(endless)), |(first, flag)| async move {
        let chunk = if first { Bytes::from_static(REFUSAL.as_bytes()) } else { Bytes::from_static(&FILLER) };
        flag.0.sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        Some((Ok::<Bytes, std::io::Error>(chunk), (false, flag)))
    });
    Body::from_stream(chunks)
}

/// One point of gauge `queue.depth` for queue `queue`, now, from a resource with only a service name: so the
/// request holds exactly this series, without a `target_info` beside it.
fn queue_depth(queue: &str, value: i64) -> Vec<u8> {
    let point = NumberDataPoint {
        attributes: vec![kv("queue", queue)],
        time_unix_nano: now_ns(),
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    };
    let metric = Metric {
        name: "queue.depth".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point] })),
        ..Default::default()
    };
    let resource = Resource { attributes: vec![kv("service.name", "worker")], ..Default::default() };
    otlp::metrics_request_with(Some(resource), None, vec![metric]).encode_to_vec()
}

/// The one sample [`queue_depth`] becomes: `queue_depth{job="worker", queue="…"}`.
fn queue_depth_sample(queue: &str, value: f64) -> (Vec<(String, String)>, f64) {
    let labels = [("__name__", "queue_depth"), ("job", "worker"), ("queue", queue)];
    (labels.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(), value)
}

/// Each tenant's samples reach a multi-tenant remote-write backend as that tenant, in the header named by
/// `tenant_header` (here Thanos's `THANOS-TENANT`, not the default `X-Scope-OrgID`), exactly once per request; the
/// default tenant's carry no tenant header at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenants_samples_reach_remote_write_in_the_configured_tenant_header() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let mimir = Mimir::start("THANOS-TENANT").await;
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig {
            endpoint: mimir.endpoint(),
            tenant_header: "THANOS-TENANT".to_owned(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;
    produce(&kafka, &kafka.topics.metrics, Some("cart"), &queue_depth("cart", 1)).await;
    produce(&kafka, &kafka.topics.metrics, Some("payments"), &queue_depth("payments", 2)).await;
    produce(&kafka, &kafka.topics.metrics, None, &queue_depth("default", 3)).await;

    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 3).await, "{:?}", exporter.stats);
    let mut writes = mimir.state.lock().unwrap().writes.clone();
    // By tenant: the default tenant's (no header) first.
    writes.sort_by(|a, b| a.tenant.cmp(&b.tenant));
    let expected = |tenant: Option<&str>, queue: &str, value: f64| Write {
        tenant: tenant.map(str::to_owned).into_iter().collect(),
        scope_orgid: Vec::new(),
        authorization: None,
        samples: vec![queue_depth_sample(queue, value)],
    };
    assert_eq!(
        writes,
        [
            expected(None, "default", 3.0),
            expected(Some("cart"), "cart", 1.0),
            expected(Some("payments"), "payments", 2.0)
        ]
    );
    exporter.stop().await;
}

/// Basic auth to an HTTP backend (`auth: { basic: { username, password: { file } } }`) arrives as
/// `Authorization: Basic base64(username:password)`, the password read from its file without the trailing newline.
/// The expected value is written out, not computed with the exporter's own encoder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_reaches_the_backend_as_base64_of_user_colon_password() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let loki = LokiReceiver::start().await;
    let password = harness::temp_dir("basic-auth").join("loki.password");
    std::fs::write(&password, "correct horse battery staple\n").unwrap();
    let exporters = ExportersConfig {
        loki: Some(LokiConfig {
            endpoint: loki.endpoint(),
            auth: Some(BackendAuth {
                bearer_token: None,
                basic: Some(BasicAuth {
                    username: "tailgate".to_owned(),
                    password: tailgate_config::SecretSource { file: Some(password), env: None },
                }),
            }),
            // Cleartext to a stand-in on this host: said, as `validate` asks.
            tls: tailgate_tls::ClientTlsConfig { insecure: true, ..Default::default() },
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::LOKI).await;
    produce(&kafka, &kafka.topics.logs, None, &logs_request("cart", vec![log_line("paid")]).encode_to_vec()).await;

    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 1).await, "{:?}", exporter.stats);
    let pushes: Vec<(Option<String>, String)> = loki
        .state
        .lock()
        .unwrap()
        .pushes
        .iter()
        .map(|p| (p.authorization.clone(), p.request.streams[0].entries[0].line.clone()))
        .collect();
    // printf 'tailgate:correct horse battery staple' | base64
    let basic = "Basic dGFpbGdhdGU6Y29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==";
    assert_eq!(pushes, [(Some(basic.to_owned()), "paid".to_owned())]);
    exporter.stop().await;
}

fn log_line(line: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: now_ns(),
        severity_number: 9,
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(line.into())) }),
        ..Default::default()
    }
}

/// A backend that answers 400 with a body that never ends (a broken proxy, a hostile endpoint) costs the exporter
/// at most 64 KiB: it reads the start, closes the connection, dead-letters the request with the start of the body
/// as the reason — a bounded `tailgate.error` — and goes on with the next request, without retrying the refused
/// one. Were the whole body read, the read would only end at the request timeout, with nothing read kept: the
/// reason would not start with the backend's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_refusal_is_read_to_64_kib_dead_lettered_and_the_exporter_goes_on() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let mimir = Mimir::start("X-Scope-OrgID").await;
    let endless = mimir.refuse_next_endlessly();
    let exporters = ExportersConfig {
        prometheus_remote_write: Some(PrometheusConfig {
            endpoint: mimir.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::PROMETHEUS).await;
    produce(&kafka, &kafka.topics.metrics, None, &queue_depth("refused", 1)).await;

    let stats = &exporter.stats;
    assert!(
        eventually(Duration::from_secs(30), || stats.records_dead_lettered.load(Ordering::SeqCst) == 1).await,
        "the refused request is dead-lettered: {stats:?}"
    );
    assert_eq!(stats.items_rejected.load(Ordering::SeqCst), 1, "its one sample counted as rejected");
    assert!(
        eventually(Duration::from_secs(10), || endless.dropped.load(Ordering::SeqCst)).await,
        "the exporter kept the connection of the endless body open"
    );
    // 64 KiB read, and what the loopback's socket buffers took besides (~4.4 MB measured): not the 80 MB a cap of
    // 64 MiB let through in the same time.
    let sent = endless.sent.load(Ordering::SeqCst);
    assert!(sent < 16 * 1024 * 1024, "{sent} bytes of the refusal sent before the exporter hung up");
    let dlq = headers::dead_letter_topic(&kafka.topics.metrics);
    let records = harness::read_topic(&kafka.brokers, &dlq, 1, Duration::from_secs(10), |r| !r.is_empty());
    assert_eq!(records.len(), 1);
    let error = records[0].header(headers::DLQ_ERROR).unwrap();
    assert!(error.starts_with(&format!("bad_request: HTTP 400 Bad Request: {REFUSAL}")), "{error:?}");
    // The dead-letter header's own bound (1 KiB), well inside the 64 KiB read.
    assert!(error.len() <= tailgate_kafka::dead_letter::MAX_ERROR_BYTES, "{} bytes", error.len());

    // The partition moves on: the next record is delivered, in the only other request.
    produce(&kafka, &kafka.topics.metrics, None, &queue_depth("accepted", 2)).await;
    assert!(eventually(Duration::from_secs(30), || exporter.delivered() == 1).await, "{stats:?}");
    {
        let state = mimir.state.lock().unwrap();
        assert_eq!(state.attempts, 2, "the refusal was not retried");
        let samples: Vec<_> = state.writes.iter().map(|w| w.samples.clone()).collect();
        assert_eq!(samples, [vec![queue_depth_sample("accepted", 2.0)]]);
    }
    assert_eq!(exporter.health.retries.load(Ordering::SeqCst), 0, "a refusal is not an outage");
    assert_eq!(stats.records_dead_lettered.load(Ordering::SeqCst), 1);
    exporter.stop().await;
}

/// `tls.server_name_override`: a backend reached as `localhost` whose certificate names only `loki.internal` is
/// refused without it — the handshake fails, no request reaches the backend, the exporter retries with the record
/// kept — and accepted with `server_name_override: loki.internal`, from the same committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_name_override_checks_the_backends_certificate_for_that_name() {
    let pki = Pki::new("server-name");
    let ca = pki.ca("ca");
    let internal = pki.leaf_for(&ca, "loki.internal", "DNS:loki.internal");
    let loki = LokiReceiver::start_with(Some(harness::certs::server_config(&internal, None))).await;
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let exporters = |server_name_override: Option<&str>| ExportersConfig {
        loki: Some(LokiConfig {
            endpoint: format!("https://localhost:{}/loki/api/v1/push", loki.addr.port()),
            tls: tailgate_tls::ClientTlsConfig {
                ca_file: Some(ca.cert.clone()),
                server_name_override: server_name_override.map(str::to_owned),
                ..Default::default()
            },
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };

    // Without the override the certificate is checked for `localhost`, and refused.
    let refused = harness::start_exporter(&exporters(None), &kafka, tailgate_exporters::LOKI).await;
    produce(&kafka, &kafka.topics.logs, None, &logs_request("cart", vec![log_line("over TLS")]).encode_to_vec()).await;
    let retries = &refused.health.retries;
    assert!(
        eventually(Duration::from_secs(30), || retries.load(Ordering::SeqCst) >= 3).await,
        "the exporter never tried the backend: {:?}",
        refused.stats
    );
    let failure = refused.health.last_failure().unwrap_or_default();
    assert!(failure.starts_with("cannot reach backend"), "refused at the handshake, not by an answer: {failure}");
    assert!(refused.health.down_since().is_some(), "an outage, not a refusal of the data");
    assert!(loki.state.lock().unwrap().attempts.is_empty(), "no request got past the handshake");
    assert_eq!(refused.delivered() + refused.stats.records_dead_lettered.load(Ordering::SeqCst), 0);
    refused.stop().await;

    // With it the same certificate is accepted, and the record kept in Kafka is delivered.
    let accepted = harness::start_exporter(&exporters(Some("loki.internal")), &kafka, tailgate_exporters::LOKI).await;
    assert!(
        eventually(Duration::from_secs(30), || accepted.delivered() == 1).await,
        "not delivered with the override: {:?}",
        accepted.health.last_failure()
    );
    let lines: BTreeSet<String> = loki.entries().into_iter().map(|e| e.1).collect();
    assert_eq!(lines, BTreeSet::from(["over TLS".to_owned()]));
    assert_eq!(loki.state.lock().unwrap().pushes.len(), 1);
    accepted.stop().await;
}

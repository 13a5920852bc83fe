//! Stand-ins for the backends that can't be installed here, built on their official protocol definitions, and a
//! real Prometheus server (Debian's package) started per test.
//!
//! * [`TraceReceiver`]: an OTLP/gRPC trace receiver (the opentelemetry-proto service Jaeger implements), which can
//!   be switched to answer `UNAVAILABLE`.
//! * [`LokiReceiver`]: Loki's `POST /loki/api/v1/push`, decoding snappy + `logproto.PushRequest`, answering from a
//!   script of statuses and recording when each attempt came.
//! * [`Prometheus`]: `prometheus --web.enable-remote-write-receiver` on a free port, queried over its HTTP API.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use tailgate_proto::loki::PushRequest;

use super::free_port;

/// How the trace receiver answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Accept,
    Unavailable,
    /// Takes the request and answers nothing for as long as this is the answer (a backend stuck on its storage);
    /// then `UNAVAILABLE`, long after the caller's timeout.
    Hang,
    /// Stores the next request but its first `n` spans, answers OK with `partial_success.rejected_spans = n` (as
    /// Jaeger does for spans its storage refused), then accepts again.
    PartialSuccess(usize),
}

#[derive(Default)]
pub struct Traces {
    /// Every (trace ID, span ID) accepted, duplicates included.
    pub spans: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every span accepted, whole, duplicates included.
    pub received: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
    /// Every request accepted, in order.
    pub requests: Vec<TraceRequest>,
    /// The spans refused by a partial success, not stored.
    pub refused: Vec<opentelemetry_proto::tonic::trace::v1::Span>,
}

/// An accepted request's identity: its `x-scope-orgid` and `authorization` metadata, and its span count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    pub tenant: Option<String>,
    pub authorization: Option<String>,
    pub spans: usize,
}

#[derive(Clone)]
pub struct TraceReceiver {
    pub addr: SocketAddr,
    pub traces: Arc<Mutex<Traces>>,
    answer: Arc<Mutex<Answer>>,
}

struct TraceHandler {
    traces: Arc<Mutex<Traces>>,
    answer: Arc<Mutex<Answer>>,
}

#[tonic::async_trait]
impl TraceService for TraceHandler {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let answer = {
            // A partial success is for one request with spans: taken here, under the lock, so no other takes it.
            let mut answer = self.answer.lock().unwrap();
            let taken = *answer;
            let has_spans =
                request.get_ref().resource_spans.iter().flat_map(|r| &r.scope_spans).any(|s| !s.spans.is_empty());
            if matches!(taken, Answer::PartialSuccess(_)) && has_spans {
                *answer = Answer::Accept;
            }
            match taken {
                Answer::PartialSuccess(_) if !has_spans => Answer::Accept,
                other => other,
            }
        };
        if answer == Answer::Hang {
            while *self.answer.lock().unwrap() == Answer::Hang {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            return Err(tonic::Status::unavailable("jaeger was stuck"));
        }
        let mut traces = self.traces.lock().unwrap();
        match answer {
            Answer::Unavailable | Answer::Hang => Err(tonic::Status::unavailable("jaeger is restarting")),
            Answer::Accept | Answer::PartialSuccess(_) => {
                let mut refuse = match answer {
                    Answer::PartialSuccess(n) => n,
                    _ => 0,
                };
                let refused = refuse;
                let text = |key: &str| request.metadata().get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (tenant, authorization) = (text("x-scope-orgid"), text("authorization"));
                let before = traces.spans.len();
                for resource in request.into_inner().resource_spans {
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            if refuse > 0 {
                                refuse -= 1;
                                traces.refused.push(span);
                                continue;
                            }
                            traces.spans.push((span.trace_id.clone(), span.span_id.clone()));
                            traces.received.push(span);
                        }
                    }
                }
                let spans = traces.spans.len() - before;
                traces.requests.push(TraceRequest { tenant, authorization, spans });
                let refused = refused - refuse;
                let partial_success = (refused > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: refused as i64,
                    error_message: format!("{refused} spans refused by the storage"),
                });
                Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success }))
            }
        }
    }
}

impl TraceReceiver {
    pub async fn start() -> TraceReceiver {
        TraceReceiver::start_with(None).await
    }

    /// With `tls = Some((server certificate, client CA))`, serves OTLP/gRPC over TLS; with a client CA, refuses
    /// clients without a certificate it signed.
    pub async fn start_with(tls: Option<(&super::certs::Issued, Option<&super::certs::Issued>)>) -> TraceReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let traces = Arc::new(Mutex::new(Traces::default()));
        let answer = Arc::new(Mutex::new(Answer::Accept));
        let handler = TraceHandler { traces: Arc::clone(&traces), answer: Arc::clone(&answer) };
        let service = TraceServiceServer::new(handler).accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let mut server = tonic::transport::Server::builder();
        if let Some((issued, client_ca)) = tls {
            tailgate_exporters::jaeger::install_tls_provider();
            let read = |path: &std::path::Path| std::fs::read(path).unwrap();
            let identity = tonic::transport::Identity::from_pem(read(&issued.cert), read(&issued.key));
            let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
            if let Some(ca) = client_ca {
                config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(&ca.cert)));
            }
            server = server.tls_config(config).unwrap();
        }
        tokio::spawn(server.add_service(service).serve_with_incoming(tokio_stream_listener(listener)));
        TraceReceiver { addr, traces, answer }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn answer(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    pub fn span_count(&self) -> usize {
        self.traces.lock().unwrap().spans.len()
    }
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}

/// An accepted entry: stream labels, line, structured metadata.
pub type Entry = (String, String, Vec<(String, String)>);

/// One push as Loki would have stored it.
#[derive(Clone, Debug)]
pub struct Push {
    pub request: PushRequest,
    pub tenant: Option<String>,
    pub authorization: Option<String>,
}

/// One request to Loki's OTLP endpoint (`/otlp/v1/logs`), as it arrived: gzip undone, protobuf decoded.
#[derive(Clone, Debug)]
pub struct OtlpPush {
    pub request: ExportLogsServiceRequest,
    pub tenant: Option<String>,
    pub content_encoding: Option<String>,
}

#[derive(Default)]
pub struct LokiState {
    pub pushes: Vec<Push>,
    pub otlp: Vec<OtlpPush>,
    /// Statuses to answer before accepting, with an optional `Retry-After` in seconds.
    pub script: VecDeque<(u16, Option<u64>, String)>,
    /// When every attempt (accepted or not) arrived.
    pub attempts: Vec<Instant>,
    /// Entries of the next push to refuse, as Loki refuses entries too far behind their stream: it stores the rest
    /// and answers 400 saying how many it ignored.
    pub refuse_entries: usize,
    /// The entries so refused, not stored, with the push's tenant.
    pub refused: Vec<(Option<String>, Entry)>,
}

#[derive(Clone)]
pub struct LokiReceiver {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<LokiState>>,
}

impl LokiReceiver {
    pub async fn start() -> LokiReceiver {
        LokiReceiver::start_with(None).await
    }

    /// With `tls = Some(rustls server config)`, serves HTTPS (handshakes inline: one client at a time is enough).
    pub async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> LokiReceiver {
        let state = Arc::new(Mutex::new(LokiState::default()));
        let shared = Arc::clone(&state);
        let otlp_state = Arc::clone(&state);
        let app = axum::Router::new()
            .route(
                "/loki/api/v1/push",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let state = Arc::clone(&shared);
                    async move { push(state, headers, body) }
                }),
            )
            .route(
                "/otlp/v1/logs",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let state = Arc::clone(&otlp_state);
                    async move { otlp_push(state, headers, body) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        match tls {
            Some(tls) => {
                let listener = TlsListener { tcp: listener, acceptor: tokio_rustls::TlsAcceptor::from(tls) };
                tokio::spawn(async move { axum::serve(listener, app).await })
            }
            None => tokio::spawn(async move { axum::serve(listener, app).await }),
        };
        LokiReceiver { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/loki/api/v1/push", self.addr)
    }

    /// Loki 3's native OTLP endpoint.
    pub fn otlp_endpoint(&self) -> String {
        format!("http://{}/otlp/v1/logs", self.addr)
    }

    /// Answer `status` (with `Retry-After: retry_after`) to the next attempts, in order, before accepting again.
    pub fn script(&self, answers: impl IntoIterator<Item = (u16, Option<u64>, &'static str)>) {
        let mut state = self.state.lock().unwrap();
        state.script.extend(answers.into_iter().map(|(s, r, b)| (s, r, b.to_owned())));
    }

    /// Every entry accepted: (labels, line, structured metadata).
    pub fn entries(&self) -> Vec<Entry> {
        let state = self.state.lock().unwrap();
        state
            .pushes
            .iter()
            .flat_map(|p| p.request.streams.iter())
            .flat_map(|s| {
                s.entries.iter().map(move |e| {
                    let metadata = e.structured_metadata.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
                    (s.labels.clone(), e.line.clone(), metadata)
                })
            })
            .collect()
    }
}

/// TLS in front of a test backend.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        loop {
            let Ok((tcp, peer)) = self.tcp.accept().await else { continue };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

fn push(state: Arc<Mutex<LokiState>>, headers: HeaderMap, body: Bytes) -> (StatusCode, HeaderMap, String) {
    let mut state = state.lock().unwrap();
    state.attempts.push(Instant::now());
    if let Some((status, retry_after, text)) = state.script.pop_front() {
        let mut out = HeaderMap::new();
        if let Some(seconds) = retry_after {
            out.insert("Retry-After", seconds.to_string().parse().unwrap());
        }
        return (StatusCode::from_u16(status).unwrap(), out, text);
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, HeaderMap::new(), "protobuf only".into());
    }
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(raw) => raw,
        Err(error) => return (StatusCode::BAD_REQUEST, HeaderMap::new(), format!("snappy: {error}")),
    };
    let request = match PushRequest::decode(raw.as_slice()) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, HeaderMap::new(), format!("protobuf: {error}")),
    };
    let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()).map(String::from);
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(String::from);
    let total = entries(&request);
    let mut request = request;
    // For one push with entries.
    let refused = match total {
        0 => 0,
        _ => std::mem::take(&mut state.refuse_entries).min(total),
    };
    let mut refuse = refused;
    for stream in &mut request.streams {
        let take = refuse.min(stream.entries.len());
        refuse -= take;
        for entry in stream.entries.drain(..take) {
            let metadata = entry.structured_metadata.iter().map(|m| (m.name.clone(), m.value.clone())).collect();
            state.refused.push((tenant.clone(), (stream.labels.clone(), entry.line, metadata)));
        }
    }
    state.pushes.push(Push { request, tenant, authorization });
    if refused > 0 {
        // Loki's own words for it (`pkg/validation`), and the total its distributor appends.
        let text = format!("entry for stream has timestamp too old; total ignored: {refused} out of {total}");
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), text);
    }
    (StatusCode::NO_CONTENT, HeaderMap::new(), String::new())
}

fn entries(request: &PushRequest) -> usize {
    request.streams.iter().map(|s| s.entries.len()).sum()
}

/// Loki's OTLP endpoint as OTLP/HTTP specifies it: protobuf, gzip or not; the tenant in `X-Scope-OrgID`.
fn otlp_push(state: Arc<Mutex<LokiState>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    if text("content-type").as_deref() != Some("application/x-protobuf") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "protobuf only".into());
    }
    let content_encoding = text("content-encoding");
    let raw = match content_encoding.as_deref() {
        Some("gzip") => {
            let mut raw = Vec::new();
            if let Err(error) = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut raw) {
                return (StatusCode::BAD_REQUEST, format!("gzip: {error}"));
            }
            raw
        }
        None => body.to_vec(),
        Some(other) => return (StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("content-encoding {other}")),
    };
    let request = match ExportLogsServiceRequest::decode(raw.as_slice()) {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("protobuf: {error}")),
    };
    let tenant = text("x-scope-orgid");
    state.lock().unwrap().otlp.push(OtlpPush { request, tenant, content_encoding });
    (StatusCode::OK, String::new())
}

/// A real Prometheus with the remote-write receiver on, in a temporary directory; killed on drop.
pub struct Prometheus {
    pub addr: SocketAddr,
    child: Child,
    dir: std::path::PathBuf,
    /// Flags beyond the ones every test's server has.
    flags: Vec<String>,
}

/// [`Prometheus::start_with_short_head`]'s boundary: samples more than this far behind the newest are refused.
pub const SHORT_HEAD_WINDOW: Duration = Duration::from_secs(10);

impl Prometheus {
    /// `None` when no `prometheus` binary is installed (`tests/run.sh` installs Debian's).
    pub async fn start() -> Prometheus {
        Self::start_with_config("global:\n  scrape_interval: 1h\n").await
    }

    /// One that scrapes `targets` (`host:port`) every second, in the shape of the seed's `prometheus.yml`: one job
    /// named `otel-collector`, no `honor_labels`.
    pub async fn start_scraping(targets: &[String]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        Self::start_with_config(&format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: \"otel-collector\"\n    static_configs:\n      \
             - targets: [{}]\n",
            targets.join(", ")
        ))
        .await
    }

    /// One whose head, like a production server's an hour behind its newest sample, refuses samples more than
    /// [`SHORT_HEAD_WINDOW`] behind it (`out of bounds`): blocks cut every 20 s (the head keeps half a block), and
    /// the server scraping itself every second, as a production one scrapes its targets, so its newest sample is
    /// always now. What a remote-write client meets after an outage longer than that window.
    pub async fn start_with_short_head() -> Prometheus {
        let block = format!("{}s", 2 * SHORT_HEAD_WINDOW.as_secs());
        let port = free_port();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      \
             - targets: [\"127.0.0.1:{port}\"]\n"
        );
        let flags = vec![
            format!("--storage.tsdb.min-block-duration={block}"),
            format!("--storage.tsdb.max-block-duration={block}"),
        ];
        Self::start_on(port, &config, flags).await
    }

    async fn start_with_config(config: &str) -> Prometheus {
        Self::start_on(free_port(), config, Vec::new()).await
    }

    async fn start_on(port: u16, config: &str, flags: Vec<String>) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("tailgate-prometheus-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut prometheus = Prometheus { addr, child: Self::spawn(addr, &dir, &flags), dir, flags };
        prometheus.until_ready().await;
        prometheus
    }

    fn spawn(addr: SocketAddr, dir: &std::path::Path, flags: &[String]) -> Child {
        let binary = std::env::var("TAILGATE_PROMETHEUS").unwrap_or_else(|_| "prometheus".to_owned());
        Command::new(&binary)
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=exemplar-storage")
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{binary}` ({e}); tests/run.sh installs Debian's prometheus"))
    }

    async fn until_ready(&mut self) {
        let addr = self.addr;
        let ready = super::eventually(Duration::from_secs(60), || std::net::TcpStream::connect(addr).is_ok()).await;
        assert!(ready, "prometheus did not start listening");
        for _ in 0..600 {
            if super::http::request(self.addr, "GET", "/-/ready", &[], b"").await.status == 200 {
                return;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "prometheus exited before it was ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus never became ready");
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same address and data directory (its write-ahead log replayed), and waits until ready.
    pub async fn restart(&mut self) {
        self.child = Self::spawn(self.addr, &self.dir, &self.flags);
        self.until_ready().await;
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// The exemplars of `selector` in the last hour: the `data` array of `/api/v1/query_exemplars`.
    pub async fn exemplars(&self, selector: &str) -> Vec<serde_json::Value> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            percent_encode(selector),
            now - 3600,
            now + 3600
        );
        let json = super::http::request(self.addr, "GET", &path, &[], b"").await.json();
        assert_eq!(json["status"], "success", "{json}");
        json["data"].as_array().cloned().unwrap_or_default()
    }

    /// The value of one result of an instant query (`query`), as a number.
    pub fn value(result: &serde_json::Value) -> f64 {
        result["value"][1].as_str().unwrap().parse().unwrap()
    }

    /// An instant query; the `data.result` array.
    pub async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let response = super::http::request(self.addr, "GET", &path, &[], b"").await;
        let json = response.json();
        assert_eq!(json["status"], "success", "{json}");
        json["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

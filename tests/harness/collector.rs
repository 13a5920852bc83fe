//! The real OpenTelemetry Collector (contrib components: `kafka` receiver and exporter, `tail_sampling`, …), a
//! distribution built from the Go module proxy by `tests/collector/build.sh` into `target/collector/` (the test
//! command builds it), run with one of the configs in `tests/collector/` and its `${env:…}` settings; and an
//! OTLP/HTTP sink that records every request the Collector exports, decoded, to compare item by item.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use super::temp_dir;

pub struct Collector {
    child: Child,
    pub log: PathBuf,
}

fn binary() -> PathBuf {
    let binary = std::env::var_os("TAILGATE_OTELCOL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/collector/otelcol-tailgate"));
    assert!(
        binary.exists(),
        "the Collector distribution is not built at {}: run tests/collector/build.sh (tests/run.sh does)",
        binary.display()
    );
    binary
}

impl Collector {
    /// Runs `tests/collector/{config}` with `env`, and waits until it says it is ready.
    pub async fn start(config: &str, env: &[(&str, String)]) -> Collector {
        let log = temp_dir("otelcol").join("otelcol.log");
        let mut command = Command::new(binary());
        command.arg("--config").arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/collector").join(config));
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the Collector starts");
        let mut collector = Collector { child, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let said = std::fs::read_to_string(&collector.log).unwrap_or_default();
            if said.contains("Everything is ready") {
                return collector;
            }
            if let Ok(Some(status)) = collector.child.try_wait() {
                panic!("the Collector exited ({status}):\n{said}");
            }
            assert!(Instant::now() < deadline, "the Collector not ready within 60 s:\n{said}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What it has logged so far.
    pub fn said(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every OTLP/HTTP request received, decoded, in order of arrival.
#[derive(Default)]
pub struct Received {
    pub traces: Vec<ExportTraceServiceRequest>,
    pub metrics: Vec<ExportMetricsServiceRequest>,
    pub logs: Vec<ExportLogsServiceRequest>,
}

/// An OTLP/HTTP (protobuf) receiver that accepts everything and keeps it.
pub struct OtlpHttpSink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Received>>,
}

impl OtlpHttpSink {
    pub async fn start() -> OtlpHttpSink {
        use axum::routing::post;
        let received = Arc::new(Mutex::new(Received::default()));
        let keep = |received: &Arc<Mutex<Received>>, put: fn(&mut Received, Bytes)| {
            let received = Arc::clone(received);
            move |body: Bytes| {
                put(&mut received.lock().unwrap(), body);
                std::future::ready(axum::http::StatusCode::OK)
            }
        };
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                post(keep(&received, |r, b| r.traces.push(ExportTraceServiceRequest::decode(b).unwrap()))),
            )
            .route(
                "/v1/metrics",
                post(keep(&received, |r, b| r.metrics.push(ExportMetricsServiceRequest::decode(b).unwrap()))),
            )
            .route("/v1/logs", post(keep(&received, |r, b| r.logs.push(ExportLogsServiceRequest::decode(b).unwrap()))))
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        OtlpHttpSink { addr, received }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

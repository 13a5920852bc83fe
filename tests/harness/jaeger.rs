//! Real Jaeger v2 (v1.75.0, built from its Go module by `tests/jaeger/build.sh` into `target/jaeger/jaeger`; the
//! test command builds it) with in-memory storage, one per test on free ports, asked for traces over its own
//! query API — what a user's Jaeger UI shows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http, temp_dir};

pub struct Jaeger {
    child: Child,
    /// Its OTLP/gRPC receiver.
    pub otlp_grpc: SocketAddr,
    /// Its query service (HTTP API).
    pub query: SocketAddr,
    log: PathBuf,
}

/// A trace as Jaeger's query API returns it.
#[derive(Debug)]
pub struct Trace {
    pub spans: Vec<Span>,
}

#[derive(Debug)]
pub struct Span {
    pub span_id: String,
    pub operation: String,
    /// The service of the span's process (its resource's `service.name`).
    pub service: String,
    /// Its tags (span attributes and what Jaeger derives from the span), values as JSON.
    pub tags: BTreeMap<String, serde_json::Value>,
}

impl Trace {
    pub fn services(&self) -> BTreeSet<&str> {
        self.spans.iter().map(|span| span.service.as_str()).collect()
    }
}

fn binary() -> PathBuf {
    let binary = std::env::var_os("TAILGATE_JAEGER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/jaeger/jaeger"));
    assert!(
        binary.exists(),
        "Jaeger v2 is not built at {}: run tests/jaeger/build.sh (tests/run.sh does)",
        binary.display()
    );
    binary
}

impl Jaeger {
    /// Starts one and waits until it receives and answers.
    pub async fn start() -> Jaeger {
        let (otlp_grpc, otlp_http, query, query_grpc) = (free_port(), free_port(), free_port(), free_port());
        let log = temp_dir("jaeger").join("jaeger.log");
        let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/jaeger/config.yaml");
        let child = Command::new(binary())
            .arg("--config")
            .arg(config)
            .env("JAEGER_OTLP_GRPC", otlp_grpc.to_string())
            .env("JAEGER_OTLP_HTTP", otlp_http.to_string())
            .env("JAEGER_QUERY_HTTP", query.to_string())
            .env("JAEGER_QUERY_GRPC", query_grpc.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("Jaeger starts");
        let mut jaeger = Jaeger {
            child,
            otlp_grpc: format!("127.0.0.1:{otlp_grpc}").parse().unwrap(),
            query: format!("127.0.0.1:{query}").parse().unwrap(),
            log,
        };
        // Its receivers start last: once the query API answers and the OTLP port is open, it is ready.
        super::wait::until_serving(jaeger.query, "/api/services", &mut jaeger.child, Duration::from_secs(60)).await;
        let receiving =
            super::wait::eventually(Duration::from_secs(30), || std::net::TcpStream::connect(jaeger.otlp_grpc).is_ok())
                .await;
        assert!(receiving, "Jaeger's OTLP receiver not listening: {}", jaeger.log.display());
        jaeger
    }

    /// The services Jaeger has spans of (`GET /api/services`).
    pub async fn services(&self) -> Vec<String> {
        let response = http::request(self.query, "GET", "/api/services", &[], b"").await;
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        body["data"].as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    }

    /// The trace `id` as Jaeger's `GET /api/traces/{id}` returns it; `None` when Jaeger has none (404).
    pub async fn trace(&self, id: &[u8]) -> Option<Trace> {
        let response = http::request(self.query, "GET", &format!("/api/traces/{}", hex::encode(id)), &[], b"").await;
        if response.status == 404 {
            return None;
        }
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
        let trace = &body["data"][0];
        let processes = &trace["processes"];
        let spans = trace["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|span| Span {
                span_id: span["spanID"].as_str().unwrap().to_owned(),
                operation: span["operationName"].as_str().unwrap().to_owned(),
                service: processes[span["processID"].as_str().unwrap()]["serviceName"].as_str().unwrap().to_owned(),
                tags: span["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|tag| (tag["key"].as_str().unwrap().to_owned(), tag["value"].clone()))
                    .collect(),
            })
            .collect();
        Some(Trace { spans })
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

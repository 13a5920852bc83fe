//! The `tailgate` binary as an operator runs it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::binary::{self, tailgate};
use crate::harness::{self, http, otlp, wait};

/// The gateway's item counters: `received = accepted + rejected` per signal (README, "Observability").
const RECEIVED: &str = "tailgate_ingest_items_received_total";
const ACCEPTED: &str = "tailgate_ingest_items_accepted_total";
const REJECTED: &str = "tailgate_ingest_items_rejected_total";
const AUTH_FAILURES: &str = "tailgate_ingest_auth_failures_total";
const HANDSHAKE_FAILURES: &str = "tailgate_tls_handshake_failures_total";

/// Whether `addr` refuses connections: nothing listens there any more.
async fn refuses_connections(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err_and(|error| error.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// `child`'s exit status once it exits by itself; panics if it has not by `deadline`.
async fn exited_by_itself(child: &mut std::process::Child, deadline: Instant) -> std::process::ExitStatus {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit by itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tailgate validate` on `config`, written to a file of `dir`.
fn validate(dir: &std::path::Path, config: &str) -> std::process::Output {
    let path = dir.join("tailgate.yaml");
    std::fs::write(&path, config).unwrap();
    tailgate().args(["validate", "--config"]).arg(&path).output().unwrap()
}

#[test]
fn validate_lists_every_problem_with_its_path_and_exits_1() {
    let dir = harness::temp_dir("cli");
    let output = validate(
        &dir,
        "kafka: { partitions: 0, brokres: x }\ningest: { max_request_bytes: 1GiB, grpc: { endpoint: here } }\n",
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("kafka.brokres: unknown key"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output =
        validate(&dir, "kafka: { partitions: 0 }\ningest: { max_request_bytes: 1GiB, grpc: { endpoint: here } }\n");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for path in ["kafka.partitions", "ingest.grpc.endpoint", "ingest.max_in_flight_bytes", "ingest.max_request_bytes"] {
        assert!(stderr.contains(&format!("{path}: ")), "{path} missing from:\n{stderr}");
    }

    let output = tailgate().args(["validate", "--config"]).arg(dir.join("missing.yaml")).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

/// The effective configuration `validate` prints has no secret in it: Kafka credentials, header values. A tenant
/// ID is an identifier (a label on `/metrics`), printed.
#[test]
fn validate_never_prints_a_secret() {
    let output = validate(
        &harness::temp_dir("cli"),
        "kafka: { client: { client.id: alice } }\n\
         exporters: { loki: { endpoint: 'http://loki:3100', tenant_id: shop-a, headers: { Authorization: Bearer s3cr3t }, tls: { insecure: true } } }\n",
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(!stdout.contains("s3cr3t"), "the header's value printed:\n{stdout}");
    assert!(stdout.contains("tenant_id: shop-a"), "{stdout}");
    assert!(stdout.contains("alice") && stdout.contains("[REDACTED]"), "{stdout}");

    // A credential in kafka.client is refused (kafka.security owns them), its value not repeated.
    let output = validate(
        &harness::temp_dir("cli"),
        "kafka: { client: { sasl.oauthbearer.config: 'principal=alice secret=hunter2' } }\n",
    );
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{printed}");
    assert!(printed.contains("kafka.client.sasl.oauthbearer.config: is a security property"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
}

/// Without a config, every listener is on loopback: exposing telemetry ports to the network is a choice the
/// config makes (`0.0.0.0:4317`), as with the OpenTelemetry Collector since 2024.
#[test]
fn listeners_default_to_loopback() {
    let output = validate(&harness::temp_dir("cli"), "kafka: {}\n");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for endpoint in ["127.0.0.1:4317", "127.0.0.1:4318", "127.0.0.1:8888"] {
        assert!(stdout.contains(&format!("endpoint: {endpoint}")), "{endpoint} missing:\n{stdout}");
    }
    assert!(!stdout.contains("0.0.0.0"), "{stdout}");
}

/// Every configuration file the repository ships passes `tailgate validate`.
#[test]
fn every_shipped_config_validates() {
    let mut checked = Vec::new();
    for path in crate::deploy::files("yaml") {
        if std::fs::read_to_string(&path).unwrap().starts_with("# The pipeline configuration")
            || path.ends_with("deploy/tailgate.yaml")
        {
            let output = tailgate().args(["validate", "--config"]).arg(&path).output().unwrap();
            assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
            assert!(String::from_utf8_lossy(&output.stdout).contains("max_request_bytes: 16MiB"));
            checked.push(path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap().display().to_string());
        }
    }
    // Exactly the four the repository ships (in `files`' sorted order): a config that stops being recognised as
    // one, or a new one, shows here.
    assert_eq!(
        checked,
        [
            "deploy/compose/tailgate.yaml",
            "deploy/kubernetes/base/tailgate.yaml",
            "deploy/seed.yaml",
            "deploy/tailgate.yaml"
        ],
        "the compose, Kubernetes and seed configs, and deploy/tailgate.yaml"
    );
}

/// `tailgate all-in-one` starts its broker, becomes ready, takes data, and on SIGTERM drains and exits by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_serves_and_exits_on_sigterm() {
    let mut aio = binary::AllInOne::start().await;
    let (telemetry, http_port, kafka, dir) = (aio.telemetry, aio.http, aio.kafka, aio.dir.clone());
    let child = &mut aio.child;
    assert_eq!(http::request(telemetry, "GET", "/health", &[], b"").await.status, 200);
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x"}]}]}]}"#;
    let response =
        http::post(format!("127.0.0.1:{http_port}").parse().unwrap(), "/v1/traces", "application/json", body).await;
    assert_eq!(response.status, 200);
    let metrics_page = http::request(telemetry, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8_lossy(&metrics_page.body);
    assert!(text.contains("tailgate_ingest_items_accepted_total{signal=\"traces\"} 1"), "{text}");

    // The acknowledged span is readable from the embedded broker by another client.
    let records =
        harness::read_topic(&format!("127.0.0.1:{kafka}"), "otlp_spans", 2, Duration::from_secs(20), |r| !r.is_empty());
    assert_eq!(records.len(), 1);

    binary::signal(child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "all-in-one did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.contains("send OTLP/gRPC to"), "{stdout}");
    assert!(dir.join("data/tansu.db").exists(), "durable storage under data_dir");
}

/// SIGINT shuts `all-in-one` down as the README says: `/ready` turns false (503) while a request is still in
/// flight, both OTLP listeners stop accepting, the request in flight is answered rather than cut, and the process
/// exits 0 by itself. Exit code 0 is the process's own word that every role stopped within `shutdown.grace`: one
/// that did not makes it exit 1 (`src/lib.rs`). The span acknowledged before the signal is in the broker when it
/// is started again on the same data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_drains_on_sigint_within_its_grace() {
    const GRACE: Duration = Duration::from_secs(10);
    let dir = harness::temp_dir("aio-sigint");
    let ports = binary::AllInOne::ports();
    let extra = format!("shutdown: {{ grace: {}s }}\n", GRACE.as_secs());
    let mut aio = binary::AllInOne::start_with(dir.clone(), ports, "", &extra).await;
    let telemetry = aio.telemetry;
    let grpc: SocketAddr = format!("127.0.0.1:{}", aio.grpc).parse().unwrap();
    let http_addr: SocketAddr = format!("127.0.0.1:{}", aio.http).parse().unwrap();
    let acknowledged = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"before-sigint"}]}]}]}"#;
    assert_eq!(http::post(http_addr, "/v1/traces", "application/json", acknowledged).await.status, 200);

    // A request in flight across the signal: its headers and the first bytes of its body sent, the rest held
    // back. The gateway waits for it (up to the grace), so the process stays up while the test looks.
    let held = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"1112131415161718191a1b1c1d1e1f20","spanId":"1112131415161718","name":"after-sigint"}]}]}]}"#;
    let (first, rest) = held.split_at(16);
    let mut in_flight = tokio::net::TcpStream::connect(http_addr).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {http_addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        held.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(first).await.unwrap();
    // The handler is reading its body once it pays for the bytes read (the acknowledged request has paid back all
    // it held): before that, a stop could close the connection as idle instead of finishing a request.
    wait::until("the held request's first bytes are read", Duration::from_secs(10), move || async move {
        http::metrics(telemetry).await.get("tailgate_ingest_in_flight_bytes").is_some_and(|bytes| *bytes > 0.0)
    })
    .await;

    binary::signal(&aio.child, "-INT");
    let signalled = Instant::now();
    // The telemetry port serves until every role has stopped, so `/ready` is seen turning false during the drain.
    wait::until("/ready answers 503 after SIGINT", Duration::from_secs(5), move || async move {
        http::try_request(telemetry, "GET", "/ready", &[], b"").await.is_ok_and(|ready| ready.status == 503)
    })
    .await;
    wait::until("the OTLP/gRPC and OTLP/HTTP ports refuse connections", Duration::from_secs(5), move || async move {
        refuses_connections(grpc).await && refuses_connections(http_addr).await
    })
    .await;

    // The request in flight is answered. Its body ended after the signal, so the gateway took none of it: 503, which
    // OTLP clients retry (on another gateway), as the status table has it for `shutting_down`.
    in_flight.write_all(rest).await.unwrap();
    let mut answer = Vec::new();
    in_flight.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "the request in flight was not answered 503:\n{answer}");
    assert!(answer.contains("the gateway is shutting down"), "{answer}");

    // Within the grace, plus the telemetry port's own drain of open scrapes (5 s at most, none open here).
    let status = exited_by_itself(&mut aio.child, signalled + GRACE + Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?} {:?} after SIGINT:\n{}", signalled.elapsed(), aio.log());

    // Started again on the same data: the acknowledged span is there, the refused one is not.
    let aio = binary::AllInOne::start_with(dir, ports, "", &extra).await;
    let brokers = aio.brokers();
    let records = tokio::task::block_in_place(|| {
        harness::read_topic(&brokers, "otlp_spans", 2, Duration::from_secs(20), |records| !records.is_empty())
    });
    let names: Vec<String> = harness::topic::spans(&records).into_iter().map(|(_, span)| span.name).collect();
    assert_eq!(names, ["before-sigint"], "the spans topic after a SIGINT and a restart");
}

#[test]
fn exporter_without_any_configured_backend_says_so_and_replay_rejects_bad_times() {
    let dir = harness::temp_dir("cli-exporter");
    let path = dir.join("none.yaml");
    std::fs::write(&path, "kafka: { brokers: '127.0.0.1:1' }\n").unwrap();
    let output = tailgate().args(["exporter", "--config"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no exporter is configured"), "{stderr}");

    let output = tailgate()
        .args(["replay", "--config"])
        .arg(&path)
        .args(["--exporter", "loki", "--from", "yesterday-ish"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("relative like -2h"));
}

/// A run that uses every secret field never shows one: not in its logs (at debug level, with failed logins and
/// a backend that refuses connections), not on `/metrics`, not in `validate`. The secrets: bearer tokens from a
/// file and from the environment, a wrong token a client sent, a TLS private key, a Kafka SASL password, a
/// backend's auth header and a tenant ID. Its failed login and a failed TLS handshake are counted on `/metrics`,
/// exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_using_every_secret_never_shows_one() {
    let pki = harness::certs::Pki::new("secrets");
    let server = pki.leaf(&pki.ca("ca"), "server");
    let dir = pki.dir.clone();
    std::fs::write(dir.join("grpc.token"), "tok-GRPC-2b1f\n").unwrap();
    let (kafka, grpc, http, metrics, loki) =
        (harness::free_port(), harness::free_port(), harness::free_port(), harness::free_port(), harness::free_port());
    let config = format!(
        "embedded_broker: {{ listen: 127.0.0.1:{kafka}, data_dir: {data} }}\n\
         kafka: {{ partitions: 1 }}\n\
         ingest:\n\
         \x20 grpc: {{ endpoint: 127.0.0.1:{grpc}, tls: {{ cert_file: {cert}, key_file: {key} }},\n\
         \x20         auth: {{ bearer_tokens: [ {{ tenant: payments, token: {{ file: {token} }} }} ] }} }}\n\
         \x20 http: {{ endpoint: 127.0.0.1:{http}, auth: {{ bearer_tokens: [ {{ tenant: cart, token: {{ env: TAILGATE_TEST_TOKEN }} }} ] }} }}\n\
         telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }}, logs: {{ level: debug }} }}\n\
         exporters: {{ loki: {{ endpoint: 'http://127.0.0.1:{loki}', tenant_id: tenant-ID-31,\n\
         \x20 headers: {{ Authorization: Bearer loki-HDR-55 }}, tls: {{ insecure: true }}, retry_on_failure: {{ initial_interval: 50ms }} }} }}\n",
        data = dir.join("data").display(),
        cert = server.cert.display(),
        key = server.key.display(),
        token = dir.join("grpc.token").display(),
    );
    let path = dir.join("tailgate.yaml");
    std::fs::write(&path, &config).unwrap();
    let key_pem = std::fs::read_to_string(&server.key).unwrap();
    let key_line = key_pem.lines().nth(1).unwrap().to_owned();
    let secrets = ["tok-GRPC-2b1f", "tok-HTTP-9c3e", "WRONG-tok-41", "loki-HDR-55", &key_line];

    let validated = tailgate()
        .args(["validate", "--config"])
        .arg(&path)
        .env("TAILGATE_TEST_TOKEN", "tok-HTTP-9c3e")
        .output()
        .unwrap();
    let printed =
        format!("{}{}", String::from_utf8_lossy(&validated.stdout), String::from_utf8_lossy(&validated.stderr));
    assert!(validated.status.success(), "{printed}");

    let mut child = tailgate()
        .args(["all-in-one", "--config"])
        .arg(&path)
        .env("TAILGATE_TEST_TOKEN", "tok-HTTP-9c3e")
        .env_remove("TAILGATE_KAFKA_BROKERS")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let telemetry: std::net::SocketAddr = format!("127.0.0.1:{metrics}").parse().unwrap();
    harness::wait::until_serving(telemetry, "/ready", &mut child, Duration::from_secs(60)).await;
    let http_addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let logs = prost::Message::encode_to_vec(&harness::otlp::logs_request("cart", vec![Default::default()]));
    let send = |token: &'static str| {
        let logs = logs.clone();
        async move {
            let authorization = format!("Bearer {token}");
            let headers = [("Content-Type", "application/x-protobuf"), ("Authorization", authorization.as_str())];
            http::request(http_addr, "POST", "/v1/logs", &headers, &logs).await.status
        }
    };
    assert_eq!(send("WRONG-tok-41").await, 401);
    assert_eq!(send("tok-HTTP-9c3e").await, 200);
    // A client speaking plaintext to the TLS gRPC port: its handshake fails (and is logged at debug, without a
    // secret). The server closes the connection; the count follows the close, so it is waited for.
    let grpc_addr: SocketAddr = format!("127.0.0.1:{grpc}").parse().unwrap();
    let mut plaintext = tokio::net::TcpStream::connect(grpc_addr).await.unwrap();
    plaintext.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(15), plaintext.read_to_end(&mut Vec::new())).await;
    wait::until("the failed handshake is counted", Duration::from_secs(15), move || async move {
        http::total(&http::metrics(telemetry).await, HANDSHAKE_FAILURES, &[]) > 0.0
    })
    .await;
    // Exactly what this run did: one failed login (the wrong token, over HTTP), one failed handshake. The refused
    // request was turned away before its body was read, so the one log record received is the one accepted.
    let series = http::metrics(telemetry).await;
    assert_eq!(http::total(&series, AUTH_FAILURES, &[]), 1.0, "one failed login in all:\n{series:#?}");
    assert_eq!(
        http::total(&series, AUTH_FAILURES, &["transport=\"http\"", "reason=\"unknown_token\""]),
        1.0,
        "the wrong HTTP token:\n{series:#?}"
    );
    assert_eq!(http::total(&series, HANDSHAKE_FAILURES, &[]), 1.0, "one failed handshake in all:\n{series:#?}");
    assert_eq!(
        http::total(&series, HANDSHAKE_FAILURES, &["listener=\"grpc\"", "reason=\"error\""]),
        1.0,
        "the plaintext client on the gRPC port:\n{series:#?}"
    );
    let log_records = |family| http::total(&series, family, &["signal=\"logs\""]);
    assert_eq!(
        (log_records(RECEIVED), log_records(ACCEPTED), log_records(REJECTED)),
        (1.0, 1.0, 0.0),
        "log records received, accepted, rejected:\n{series:#?}"
    );
    // The Loki exporter has the record, and its backend refuses connections: it retries, logging why.
    let retried = harness::eventually(Duration::from_secs(30), || {
        let page = futures::executor::block_on(http::try_request(telemetry, "GET", "/metrics", &[], b""));
        page.is_ok_and(|page| String::from_utf8_lossy(&page.body).contains("tailgate_exporter_retries_total"))
    })
    .await;
    assert!(retried, "the Loki exporter never retried");
    let page = http::request(telemetry, "GET", "/metrics", &[], b"").await;
    binary::signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    let logged = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(logged.contains("DEBUG"), "the run logged at debug level:\n{logged}");
    for (what, text) in
        [("validate", printed), ("the logs", logged), ("/metrics", String::from_utf8_lossy(&page.body).into_owned())]
    {
        for secret in &secrets {
            assert!(!text.contains(secret), "`{secret}` is in {what}:\n{text}");
        }
    }
}

/// The gateway's item counters add up, per signal, as the README says: `received = accepted + rejected`, each the
/// exact count sent, over both transports and every reason. Traces: over HTTP a valid span, one with an all-zero
/// trace ID and one too large for any Kafka record (1.5 MB, past `kafka.producer.max_message_bytes`' 1 MB); over
/// gRPC a valid span and one with a 3-byte span ID. Logs: two valid records and one with a 3-byte trace ID.
/// Metrics: a gauge of two data points, all valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_counts_every_item_received_as_accepted_or_rejected() {
    let aio = binary::AllInOne::start().await;
    let http_addr: SocketAddr = format!("127.0.0.1:{}", aio.http).parse().unwrap();
    let span =
        |trace_id: Vec<u8>, span_id: Vec<u8>, name: String| Span { trace_id, span_id, name, ..Default::default() };
    let protobuf = "application/x-protobuf";

    let traces = otlp::trace_request(vec![
        span(otlp::trace_id(1), vec![1; 8], "valid".into()),
        span(vec![0; 16], vec![2; 8], "all-zero trace ID".into()),
        span(otlp::trace_id(2), vec![3; 8], "x".repeat(1_500_000)),
    ]);
    let response = http::post(http_addr, "/v1/traces", protobuf, &traces.encode_to_vec()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let partial = ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2, "{}", partial.error_message);

    let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{}", aio.grpc)).await.unwrap();
    let traces = otlp::trace_request(vec![
        span(otlp::trace_id(3), vec![4; 8], "valid".into()),
        span(otlp::trace_id(4), vec![5; 3], "3-byte span ID".into()),
    ]);
    let partial = client.export(traces).await.unwrap().into_inner().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1, "{}", partial.error_message);

    let logs = otlp::logs_request(
        "cart",
        vec![LogRecord::default(), LogRecord::default(), LogRecord { trace_id: vec![1, 2, 3], ..Default::default() }],
    );
    let response = http::post(http_addr, "/v1/logs", protobuf, &logs.encode_to_vec()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    let partial = ExportLogsServiceResponse::decode(response.body.as_slice()).unwrap().partial_success.unwrap();
    assert_eq!(partial.rejected_log_records, 1, "{}", partial.error_message);

    let point = |value| NumberDataPoint {
        time_unix_nano: otlp::now_ns(),
        value: Some(number_data_point::Value::AsInt(value)),
        ..Default::default()
    };
    let gauge = Metric {
        name: "cart.items".into(),
        data: Some(metric::Data::Gauge(Gauge { data_points: vec![point(1), point(2)] })),
        ..Default::default()
    };
    let metrics = otlp::metrics_request_with(otlp::service_resource("cart"), None, vec![gauge]);
    let response = http::post(http_addr, "/v1/metrics", protobuf, &metrics.encode_to_vec()).await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));

    // Every counter moves before the client is answered: no waiting.
    let series = http::metrics(aio.telemetry).await;
    for (signal, received, accepted, rejected) in
        [("traces", 5.0, 2.0, 3.0), ("logs", 3.0, 2.0, 1.0), ("metrics", 2.0, 2.0, 0.0)]
    {
        let label = format!("signal=\"{signal}\"");
        let count = |family| http::total(&series, family, &[label.as_str()]);
        assert_eq!(
            (count(RECEIVED), count(ACCEPTED), count(REJECTED)),
            (received, accepted, rejected),
            "{signal}: received, accepted, rejected:\n{series:#?}"
        );
        assert_eq!(count(RECEIVED), count(ACCEPTED) + count(REJECTED), "{signal}: received = accepted + rejected");
    }
    // Spans received by transport, rejected by reason: the sums above are of these.
    let spans = |family, label| http::total(&series, family, &["signal=\"traces\"", label]);
    assert_eq!(spans(RECEIVED, "transport=\"http\""), 3.0, "spans received over HTTP:\n{series:#?}");
    assert_eq!(spans(RECEIVED, "transport=\"grpc\""), 2.0, "spans received over gRPC:\n{series:#?}");
    assert_eq!(spans(REJECTED, "reason=\"invalid_id\""), 2.0, "spans rejected for their IDs:\n{series:#?}");
    assert_eq!(spans(REJECTED, "reason=\"too_large\""), 1.0, "spans rejected as too large:\n{series:#?}");
    assert_eq!(
        http::total(&series, REJECTED, &["signal=\"logs\"", "reason=\"invalid_id\""]),
        1.0,
        "log records rejected for their IDs:\n{series:#?}"
    );
}

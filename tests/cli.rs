//! The `tailgate` binary as an operator runs it.

use std::time::{Duration, Instant};

use crate::harness::binary::{self, tailgate};
use crate::harness::{self, http};

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
    let mut checked = 0;
    for path in crate::deploy::files("yaml") {
        if std::fs::read_to_string(&path).unwrap().starts_with("# The pipeline configuration")
            || path.ends_with("deploy/tailgate.yaml")
        {
            let output = tailgate().args(["validate", "--config"]).arg(&path).output().unwrap();
            assert!(output.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&output.stderr));
            assert!(String::from_utf8_lossy(&output.stdout).contains("max_request_bytes: 16MiB"));
            checked += 1;
        }
    }
    assert!(checked >= 3, "deploy/tailgate.yaml, the compose and the Kubernetes configs");
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
/// backend's auth header and a tenant ID.
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

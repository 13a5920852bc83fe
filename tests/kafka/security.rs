//! `kafka.security` against Apache Kafka's own TLS, SASL/SCRAM and `StandardAuthorizer`: every client of every
//! role — the gateway's producer and admin client, the sampler's consumer, producer and decision loader, the
//! exporter's consumer — connects as configured, the broker refuses what it must, and each role says why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint};
use tailgate_config::{Problems, SecretSource};
use tailgate_exporters::loki::LokiConfig;
use tailgate_exporters::prometheus::PrometheusConfig;
use tailgate_exporters::ExportersConfig;
use tailgate_kafka::{ensure_topics, KafkaConfig, KafkaTls, Mechanism, Protocol, Sasl, SecurityConfig};
use tailgate_sampler::SamplerConfig;

use super::{expected, send_traces};
use crate::harness::apache_kafka::{Cluster, Options};
use crate::harness::backends::{LokiReceiver, Prometheus, TraceReceiver};
use crate::harness::certs::{Issued, Pki};
use crate::harness::otlp::{logs_request, metrics_request_with, now_ns, service_resource};
use crate::harness::{self, binary, eventually};

/// The broker's side of TLS: its key and certificate (`broker`) in one PEM file, and the CA it trusts for clients.
fn broker_tls(pki: &Pki, ca: &Issued, broker: &Issued, client_auth: bool) -> Vec<(String, String)> {
    let keystore = pki.dir.join("broker-keystore.pem");
    let pem = [std::fs::read_to_string(&broker.key).unwrap(), std::fs::read_to_string(&broker.cert).unwrap()].concat();
    std::fs::write(&keystore, pem).unwrap();
    let mut properties = vec![
        ("ssl.keystore.type", "PEM".to_owned()),
        ("ssl.keystore.location", keystore.display().to_string()),
        ("ssl.truststore.type", "PEM".to_owned()),
        ("ssl.truststore.location", ca.cert.display().to_string()),
    ];
    if client_auth {
        properties.push(("ssl.client.auth", "required".to_owned()));
    }
    properties.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Runs the gateway, a sampler and a Jaeger exporter on `kafka` and sends two traces whose failure arrives after
/// their root: all four spans must reach Jaeger.
async fn pipeline_delivers(kafka: &KafkaConfig) {
    let jaeger = TraceReceiver::start().await;
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let policy = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&policy, kafka, "tailgate-sampler").await;
    let exporter = harness::roles::start_jaeger_exporter(jaeger.endpoint(), kafka).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    send_traces(&mut client, 0..2).await;
    let want = expected(0..2);
    let delivered = eventually(Duration::from_secs(60), || {
        let got: std::collections::HashSet<_> = jaeger.traces.lock().unwrap().spans.iter().cloned().collect();
        want.is_subset(&got)
    })
    .await;
    assert!(delivered, "{} of 4 spans delivered: {:?}", jaeger.span_count(), exporter.health.last_failure());
    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}

fn secured(kafka: &KafkaConfig, security: SecurityConfig) -> KafkaConfig {
    KafkaConfig { security, ..kafka.clone() }
}

/// Asks the broker for the topics' metadata (creating a probe topic) as `kafka` says; the error as text.
async fn probe(kafka: &KafkaConfig) -> Result<(), String> {
    let settings: &[(&str, &str)] = &[];
    ensure_topics(kafka, &[("security-probe", settings)], Duration::from_secs(8)).await.map_err(|e| e.to_string())
}

/// A listener that requires a client certificate from the test's CA (`ssl.client.auth=required`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reaches_kafka_over_mutual_tls() {
    let pki = Pki::new("kafka-mtls");
    let ca = pki.ca("ca");
    let properties = broker_tls(&pki, &ca, &pki.leaf(&ca, "broker"), true);
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(Options {
            client_protocol: "SSL",
            advertised_host: "localhost",
            properties,
            ..Options::default()
        })
    });
    let client = pki.leaf(&ca, "tailgate");
    let tls = KafkaTls {
        ca_file: Some(ca.cert.clone()),
        cert_file: Some(client.cert.clone()),
        key_file: Some(client.key.clone()),
    };
    let kafka = secured(
        &harness::kafka_config(&cluster.bootstrap(), 2),
        SecurityConfig { protocol: Protocol::Ssl, sasl: None, tls: Some(tls.clone()) },
    );
    let mut problems = Problems::default();
    kafka.validate("kafka", &mut problems);
    assert!(problems.is_empty(), "{problems}");

    // Refused, each for its own reason: no client certificate, a broker certificate from another CA, plaintext.
    let anonymous = secured(
        &kafka,
        SecurityConfig {
            tls: Some(KafkaTls { cert_file: None, key_file: None, ..tls.clone() }),
            ..kafka.security.clone()
        },
    );
    let refused = probe(&anonymous).await.expect_err("a client without a certificate was let through");
    assert!(refused.contains("SSL") || refused.contains("Authentication"), "{refused}");
    let other = pki.ca("other");
    let misled = secured(
        &kafka,
        SecurityConfig {
            tls: Some(KafkaTls { ca_file: Some(other.cert.clone()), ..tls.clone() }),
            ..kafka.security.clone()
        },
    );
    let refused = probe(&misled).await.expect_err("a broker certificate from an untrusted CA was accepted");
    assert!(refused.contains("SSL") || refused.contains("certificate"), "{refused}");
    let plaintext = secured(&kafka, SecurityConfig::default());
    probe(&plaintext).await.expect_err("plaintext reached a TLS listener");

    probe(&kafka).await.expect("the configured client is let in");
    pipeline_delivers(&kafka).await;
}

/// The brokers' names are checked against their certificates (SECURITY.md, "Kafka: TLS and SASL"): a broker whose
/// certificate, signed by the trusted CA, is for another name is refused — by the admin client every role starts
/// with, and by each role's binary, which exits saying why. The same client with only that check turned off
/// (`ssl.endpoint.identification.algorithm=none`, which `validate` refuses in `kafka.client`) is let in: the name
/// is what was refused, not the CA or the listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_for_another_name_is_refused() {
    let pki = Pki::new("kafka-host-name");
    let ca = pki.ca("ca");
    let broker = pki.leaf_for(&ca, "broker", "DNS:kafka.other.example");
    let properties = broker_tls(&pki, &ca, &broker, false);
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(Options {
            client_protocol: "SSL",
            advertised_host: "localhost",
            properties,
            ..Options::default()
        })
    });
    let tls = KafkaTls { ca_file: Some(ca.cert.clone()), ..KafkaTls::default() };
    let kafka = secured(
        &harness::kafka_config(&cluster.bootstrap(), 1),
        SecurityConfig { protocol: Protocol::Ssl, sasl: None, tls: Some(tls) },
    );
    let mut problems = Problems::default();
    kafka.validate("kafka", &mut problems);
    assert!(problems.is_empty(), "{problems}");

    let refused = probe(&kafka).await.expect_err("a broker certificate for another name was accepted");
    assert!(refused.contains("certificate verify failed"), "refused in the TLS handshake: {refused}");

    let mut unchecked = kafka.clone();
    unchecked.client.insert("ssl.endpoint.identification.algorithm".into(), "none".into());
    let mut problems = Problems::default();
    unchecked.validate("kafka", &mut problems);
    assert!(
        problems.to_string().contains("kafka.client.ssl.endpoint.identification.algorithm"),
        "validate refuses turning the check off: {problems}"
    );
    probe(&unchecked).await.expect("the same broker, certificate and CA without the host name check");

    // Each role's binary, as an operator starts it: it must stop and say why, not wait for ever.
    for (role, status, stderr) in each_role_until_exit(&kafka, "host-name", Duration::from_secs(120)).await {
        let status = status.unwrap_or_else(|| panic!("`tailgate {role}` never exited: {stderr}"));
        assert!(!status.success(), "`tailgate {role}` exited 0 against a broker of another name: {stderr}");
        assert!(stderr.contains("certificate verify failed"), "`tailgate {role}` says why: {stderr}");
    }
}

/// Every role's binary on `kafka`, started together, each run until it exits by itself or `timeout` passes: its
/// name, exit status (`None`: still running at the timeout, then killed) and standard error.
async fn each_role_until_exit(
    kafka: &KafkaConfig,
    test: &str,
    timeout: Duration,
) -> Vec<(&'static str, Option<std::process::ExitStatus>, String)> {
    let yaml = harness::kafka::kafka_yaml(kafka);
    let roles = [
        (
            "ingest",
            format!(
                "ingest: {{ grpc: {{ endpoint: '127.0.0.1:{}' }}, http: {{ endpoint: '127.0.0.1:{}' }} }}\n",
                harness::free_port(),
                harness::free_port()
            ),
        ),
        ("sampler", String::new()),
        ("exporter", "exporters: { jaeger: { endpoint: 'http://127.0.0.1:1' } }\n".to_owned()),
    ];
    let runs: Vec<_> = roles
        .into_iter()
        .map(|(role, section)| {
            let dir = harness::temp_dir(&format!("{test}-{role}"));
            let path = dir.join("tailgate.yaml");
            let telemetry = harness::free_port();
            std::fs::write(
                &path,
                format!("{yaml}{section}telemetry: {{ metrics: {{ endpoint: '127.0.0.1:{telemetry}' }} }}\n"),
            )
            .unwrap();
            tokio::task::spawn_blocking(move || {
                let (status, stderr) = binary::run_until_exit(role, &path, timeout);
                (role, status, stderr)
            })
        })
        .collect();
    let mut out = Vec::new();
    for run in runs {
        out.push(run.await.unwrap());
    }
    out
}

fn password_file(dir: &Path, name: &str, password: &str) -> PathBuf {
    let path = dir.join(format!("{name}.password"));
    std::fs::write(&path, format!("{password}\n")).unwrap();
    path
}

fn scram(user: &str, password: PathBuf, tls: &KafkaTls) -> SecurityConfig {
    SecurityConfig {
        protocol: Protocol::SaslSsl,
        sasl: Some(Sasl {
            mechanism: Mechanism::ScramSha512,
            username: user.to_owned(),
            password: SecretSource { file: Some(password), env: None },
        }),
        tls: Some(tls.clone()),
    }
}

/// SASL/SCRAM-SHA-512 over TLS, verified by the broker: the right password works for every role; a wrong one is
/// refused by the broker, and each role's binary exits with an error that says authentication failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_over_tls_lets_the_right_password_in_and_each_role_reports_a_wrong_one() {
    let pki = Pki::new("kafka-scram");
    let ca = pki.ca("ca");
    let mut properties = broker_tls(&pki, &ca, &pki.leaf(&ca, "broker"), false);
    properties.push(("sasl.enabled.mechanisms".into(), "SCRAM-SHA-512".into()));
    properties.push((
        "listener.name.client.scram-sha-512.sasl.jaas.config".into(),
        "org.apache.kafka.common.security.scram.ScramLoginModule required;".into(),
    ));
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(Options {
            client_protocol: "SASL_SSL",
            advertised_host: "localhost",
            properties,
            scram_users: vec![("tailgate".into(), "right-password".into())],
            ..Options::default()
        })
    });
    let tls = KafkaTls { ca_file: Some(ca.cert.clone()), ..KafkaTls::default() };
    let base = harness::kafka_config(&cluster.bootstrap(), 2);
    let kafka = secured(&base, scram("tailgate", password_file(&pki.dir, "right", "right-password"), &tls));
    probe(&kafka).await.expect("the right password is accepted");
    pipeline_delivers(&kafka).await;

    let wrong = secured(&base, scram("tailgate", password_file(&pki.dir, "wrong", "wrong-password"), &tls));
    let refused = probe(&wrong).await.expect_err("a wrong password was let in");
    assert!(refused.contains("uthentication"), "the error says authentication failed: {refused}");

    // Each role's binary, as an operator starts it: it must stop and say why, not wait for ever.
    for (role, status, stderr) in each_role_until_exit(&wrong, "scram", Duration::from_secs(90)).await {
        let status = status.unwrap_or_else(|| panic!("`tailgate {role}` with a wrong password never exited: {stderr}"));
        assert!(!status.success(), "`tailgate {role}` with a wrong password exited 0: {stderr}");
        assert!(stderr.contains("uthentication"), "`tailgate {role}` says authentication failed: {stderr}");
        assert!(!stderr.contains("wrong-password"), "`tailgate {role}` printed the password: {stderr}");
    }
}

/// SCRAM users of the ACL cluster: the admin (a super user) and one principal per role.
const PRINCIPALS: [&str; 5] = ["admin", "ingest", "sampler", "exporter", "replay"];

/// A SASL/SCRAM cluster with `StandardAuthorizer`: nothing is allowed that no ACL allows.
fn authorizing_cluster() -> Cluster {
    Cluster::start(
        Options {
            client_protocol: "SASL_PLAINTEXT",
            scram_users: PRINCIPALS.iter().map(|p| (p.to_string(), format!("{p}-secret"))).collect(),
            ..Options::default()
        }
        .property("sasl.enabled.mechanisms", "SCRAM-SHA-512")
        .property(
            "listener.name.client.scram-sha-512.sasl.jaas.config",
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        )
        .property("authorizer.class.name", "org.apache.kafka.metadata.authorizer.StandardAuthorizer")
        // The brokers and controllers talk over the plaintext INTERNAL and CONTROLLER listeners, as ANONYMOUS.
        .property("super.users", "User:admin;User:ANONYMOUS"),
    )
}

fn as_principal(base: &KafkaConfig, dir: &Path, principal: &str) -> KafkaConfig {
    let password = password_file(dir, principal, &format!("{principal}-secret"));
    let security = SecurityConfig {
        protocol: Protocol::SaslPlaintext,
        sasl: Some(Sasl {
            mechanism: Mechanism::ScramSha512,
            username: principal.to_owned(),
            password: SecretSource { file: Some(password), env: None },
        }),
        tls: None,
    };
    secured(base, security)
}

/// `kafka-acls.sh --add` as the admin: allow `principal` `operations` on each resource (`--topic X`, `--group Y`,
/// `--cluster`, with `--resource-pattern-type prefixed` where given).
fn grant(cluster: &Cluster, dir: &Path, principal: &str, operations: &[&str], resources: &[&str]) {
    acls(cluster, dir, "--add", principal, operations, resources);
}

/// `kafka-acls.sh <action>` (`--add`, `--remove`) as the admin.
fn acls(cluster: &Cluster, dir: &Path, action: &str, principal: &str, operations: &[&str], resources: &[&str]) {
    let admin = dir.join("admin.properties");
    std::fs::write(
        &admin,
        "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.\
         security.scram.ScramLoginModule required username=\"admin\" password=\"admin-secret\";\n",
    )
    .unwrap();
    let bootstrap = cluster.bootstrap();
    let principal = format!("User:{principal}");
    let mut args = vec!["--bootstrap-server", &bootstrap, "--command-config", admin.to_str().unwrap(), action];
    if action == "--remove" {
        args.push("--force");
    }
    args.extend(["--allow-principal", &principal]);
    for operation in operations {
        args.extend(["--operation", operation]);
    }
    let resources: Vec<&str> = resources.iter().flat_map(|r| r.split(' ')).collect();
    args.extend(resources);
    cluster.tool("org.apache.kafka.tools.AclCommand", &args);
}

/// The ACLs SECURITY.md lists for each role, granted and nothing more; the topics made by the admin, as where
/// topics are managed elsewhere.
fn grant_the_documented_acls(cluster: &Cluster, dir: &Path, kafka: &KafkaConfig) {
    let t = &kafka.topics;
    let dlq = |topic: &str| tailgate_proto::headers::dead_letter_topic(topic);
    let topic = |name: &str| format!("--topic {name}");
    let grants: Vec<(&str, Vec<&str>, Vec<String>)> = vec![
        (
            "ingest",
            vec!["Write", "Describe", "DescribeConfigs"],
            vec![topic(&t.spans), topic(&t.metrics), topic(&t.logs)],
        ),
        ("sampler", vec!["Read", "Describe", "DescribeConfigs"], vec![topic(&t.spans), topic(&t.decisions)]),
        (
            "sampler",
            vec!["Write", "Describe", "DescribeConfigs"],
            vec![topic(&t.sampled_spans), topic(&t.decisions), topic(&t.metrics), topic(&dlq(&t.spans))],
        ),
        (
            "sampler",
            vec!["Read"],
            vec![
                format!("--group {}", kafka.consumer.sampler_group()),
                "--group tailgate-sampler-decision-loader".into(),
            ],
        ),
        ("exporter", vec!["Read", "Describe"], vec![topic(&t.sampled_spans)]),
        ("exporter", vec!["Write", "Describe", "DescribeConfigs"], vec![topic(&dlq(&t.sampled_spans))]),
        ("exporter", vec!["Read"], vec![format!("--group {}", kafka.consumer.exporter_group("jaeger"))]),
        ("exporter", vec!["Read", "Describe"], vec![topic(&t.metrics), topic(&t.logs)]),
        ("exporter", vec!["Write", "Describe", "DescribeConfigs"], vec![topic(&dlq(&t.metrics)), topic(&dlq(&t.logs))]),
        (
            "exporter",
            vec!["Read"],
            vec![
                format!("--group {}", kafka.consumer.exporter_group("prometheus_remote_write")),
                format!("--group {}", kafka.consumer.exporter_group("loki")),
            ],
        ),
        ("replay", vec!["Read", "Describe"], vec![topic(&t.sampled_spans)]),
        ("replay", vec!["Write", "Describe", "DescribeConfigs"], vec![topic(&dlq(&t.sampled_spans))]),
        ("replay", vec!["Read"], vec!["--resource-pattern-type prefixed --group tailgate-replay-jaeger-".into()]),
        ("replay", vec!["Read"], vec!["--group tailgate-replay-lookup".into()]),
    ];
    for (principal, operations, resources) in grants {
        let resources: Vec<&str> = resources.iter().map(String::as_str).collect();
        grant(cluster, dir, principal, &operations, &resources);
    }
}

/// Each role with exactly the ACLs SECURITY.md lists works: traces go in through the gateway, are kept by the
/// sampler, delivered by the Jaeger exporter, and replayed; a log record and a gauge are delivered by the Loki and
/// remote-write exporters. Then a sampler and an exporter without `Read` on their groups each stop with an error
/// that names what is missing instead of idling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_works_with_exactly_its_documented_acls_and_names_a_missing_one() {
    let cluster = tokio::task::block_in_place(authorizing_cluster);
    let dir = harness::temp_dir("kafka-acls");
    let base = harness::kafka_config(&cluster.bootstrap(), 2);
    // The admin makes the topics; the roles find them.
    let admin = as_principal(&base, &dir, "admin");
    let t = &base.topics;
    let dlq = tailgate_proto::headers::dead_letter_topic;
    let none: &[(&str, &str)] = &[];
    let decisions: &[(&str, &str)] = &[("cleanup.policy", "delete"), ("retention.ms", "1200000")];
    let dead_letters = [&t.spans, &t.sampled_spans, &t.metrics, &t.logs].map(|topic| dlq(topic));
    let mut topics: Vec<(&str, &[(&str, &str)])> = vec![
        (&t.spans, none),
        (&t.metrics, none),
        (&t.logs, none),
        (&t.sampled_spans, none),
        (&t.decisions, decisions),
    ];
    topics.extend(dead_letters.iter().map(|topic| (topic.as_str(), none)));
    ensure_topics(&admin, &topics, Duration::from_secs(30)).await.unwrap();
    tokio::task::block_in_place(|| grant_the_documented_acls(&cluster, &dir, &base));

    let ingest = as_principal(&base, &dir, "ingest");
    let sampler = as_principal(&base, &dir, "sampler");
    let exporter = as_principal(&base, &dir, "exporter");
    let jaeger = TraceReceiver::start().await;
    let gateway = harness::start_gateway(harness::ingest_config(), ingest.clone()).await;
    let policy = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let running_sampler = harness::start_sampler(&policy, &sampler, "tailgate-sampler").await;
    let running_exporter = harness::roles::start_jaeger_exporter(jaeger.endpoint(), &exporter).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    send_traces(&mut client, 0..5).await;
    let want = expected(0..5);
    let spans = |jaeger: &TraceReceiver| -> std::collections::HashSet<_> {
        jaeger.traces.lock().unwrap().spans.iter().cloned().collect()
    };
    let delivered = eventually(Duration::from_secs(60), || want.is_subset(&spans(&jaeger))).await;
    assert!(delivered, "{} of {} spans delivered with the documented ACLs", spans(&jaeger).len(), want.len());

    // The Loki and remote-write exporters, as the exporter principal with their rows: one log record and one gauge
    // through the gateway, each delivered.
    let loki = LokiReceiver::start().await;
    let prometheus = Prometheus::start().await;
    let others = ExportersConfig {
        loki: Some(LokiConfig {
            endpoint: loki.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        prometheus_remote_write: Some(PrometheusConfig {
            endpoint: prometheus.endpoint(),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let loki_exporter = harness::start_exporter(&others, &exporter, tailgate_exporters::LOKI).await;
    let remote_write = harness::start_exporter(&others, &exporter, tailgate_exporters::PROMETHEUS).await;
    let record = LogRecord {
        time_unix_nano: now_ns(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue("paid with ACLs".into())) }),
        ..Default::default()
    };
    let mut logs = LogsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    logs.export(logs_request("checkout", vec![record])).await.unwrap();
    let gauge = Metric {
        name: "acl.gauge".into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: now_ns(),
                value: Some(number_data_point::Value::AsInt(7)),
                ..Default::default()
            }],
        })),
        ..Default::default()
    };
    let mut metrics = MetricsServiceClient::connect(gateway.grpc_url()).await.unwrap();
    metrics.export(metrics_request_with(service_resource("checkout"), None, vec![gauge])).await.unwrap();
    let lines = || loki.entries().into_iter().map(|e| e.1).collect::<Vec<_>>();
    assert!(
        eventually(Duration::from_secs(60), || lines() == ["paid with ACLs"]).await,
        "Loki got {:?}: {:?}",
        lines(),
        loki_exporter.health.last_failure()
    );
    let mut stored = Vec::new();
    for _ in 0..300 {
        stored = prometheus.query("acl_gauge").await;
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(stored.len(), 1, "the gauge in Prometheus: {:?}", remote_write.health.last_failure());
    loki_exporter.stop().await;
    remote_write.stop().await;
    running_exporter.stop().await;
    running_sampler.stop().await;
    gateway.stop().await;

    // Replay, as its own principal, of the same range.
    let replayed = TraceReceiver::start().await;
    let replay = as_principal(&base, &dir, "replay");
    let config = format!(
        "{}exporters:\n  jaeger: {{ endpoint: '{}' }}\n",
        harness::kafka::kafka_yaml(&replay),
        replayed.endpoint()
    );
    let path = dir.join("replay.yaml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        crate::harness::binary::tailgate()
            .args(["replay", "--config"])
            .arg(&path)
            .args(["--exporter", "jaeger", "--from", "-10m"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "replay with its documented ACLs: {stderr}");
    assert!(want.is_subset(&spans(&replayed)), "the replay delivered the range: {stderr}");

    // Missing permissions: each role as an operator runs it, on a cluster whose ACLs lack one thing.
    let missing = [
        (
            "sampler",
            base.consumer.sampler_group(),
            "sampler: { decision_wait: 1s }\n".to_owned(),
            "Group authorization failed",
        ),
        (
            "exporter",
            base.consumer.exporter_group("jaeger"),
            format!("exporters: {{ jaeger: {{ endpoint: '{}' }} }}\n", jaeger.endpoint()),
            "Group authorization failed",
        ),
    ];
    for (role, group, section, expected_error) in missing {
        tokio::task::block_in_place(|| {
            acls(&cluster, &dir, "--remove", role, &["Read"], &[&format!("--group {group}")])
        });
        let kafka = as_principal(&base, &dir, role);
        let telemetry = harness::free_port();
        let path = dir.join("tailgate.yaml");
        std::fs::write(
            &path,
            format!(
                "{}{section}telemetry: {{ metrics: {{ endpoint: '127.0.0.1:{telemetry}' }} }}\n",
                harness::kafka::kafka_yaml(&kafka)
            ),
        )
        .unwrap();
        let (status, stderr) =
            tokio::task::spawn_blocking(move || binary::run_until_exit(role, &path, Duration::from_secs(60)))
                .await
                .unwrap();
        assert!(
            status.is_some_and(|s| !s.success()),
            "`tailgate {role}` without Read on group {group} did not stop by itself, or exited 0: {stderr}"
        );
        assert!(
            stderr.contains(expected_error) && stderr.contains(group.as_str()),
            "`tailgate {role}` names the missing permission: {stderr}"
        );
    }
}

//! Static checks of what ships for running Tailgate: the compose stack, Grafana provisioning and dashboards,
//! Prometheus configuration and alert rules, Kubernetes manifests. They must agree with each other and with the
//! code: every file mounted exists, hosts and ports match, every metric a dashboard or alert queries is one Tailgate
//! exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use tailgate_exporters::prometheus::{metric_name, Kind};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every file under `deploy/` with extension `ext`, recursively.
pub fn files(ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(ROOT).join("deploy"), ext, &mut out);
    out.sort();
    out
}

/// A YAML file with its `<<:` merge keys applied, as docker compose reads it.
fn yaml(path: &str) -> Value {
    let mut value: Value = serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    value.apply_merge().unwrap_or_else(|e| panic!("{path}: {e}"));
    value
}

fn compose_services(compose: &Value) -> BTreeSet<String> {
    compose["services"].as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect()
}

/// `http://host:port/...` → (host, port).
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.split_once(':').unwrap_or((authority, "80"));
    (host.to_owned(), port.parse().unwrap())
}

#[test]
fn the_compose_file_parses_and_everything_it_mounts_exists() {
    let compose = yaml("docker-compose.yml");
    let services = compose_services(&compose);
    for name in [
        "kafka",
        "kafka-init",
        "ingest-1",
        "ingest-2",
        "lb",
        "sampler-1",
        "sampler-2",
        "exporter",
        "jaeger",
        "prometheus",
        "loki",
        "grafana",
        "loadgen",
    ] {
        assert!(services.contains(name), "service {name} missing");
    }
    for (name, service) in compose["services"].as_mapping().unwrap() {
        let name = name.as_str().unwrap();
        // Images are pinned; the tailgate services build the repository's Dockerfile.
        if let Some(image) = service["image"].as_str() {
            assert!(image.contains(':') && !image.ends_with(":latest"), "{name}: pin {image}");
        }
        if let Some(dockerfile) = service["build"]["dockerfile"].as_str() {
            assert!(Path::new(ROOT).join(dockerfile).exists(), "{name}: {dockerfile}");
        }
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with("./") {
                assert!(Path::new(ROOT).join(source).exists(), "{name} mounts {source}, which does not exist");
            }
        }
        for dependency in service["depends_on"].as_sequence().into_iter().flatten() {
            assert!(services.contains(dependency.as_str().unwrap()), "{name} depends on unknown {dependency:?}");
        }
        if let Some(dependencies) = service["depends_on"].as_mapping() {
            for dependency in dependencies.keys() {
                assert!(services.contains(dependency.as_str().unwrap()), "{name} depends on unknown {dependency:?}");
            }
        }
    }
}

#[test]
fn the_topic_creation_step_creates_every_topic_the_pipeline_uses_with_its_partition_count() {
    let compose = yaml("docker-compose.yml");
    let script = compose["services"]["kafka-init"]["command"][0].as_str().unwrap();
    let text = std::fs::read_to_string(Path::new(ROOT).join("deploy/compose/tailgate.yaml")).unwrap();
    let config = tailgate::config::Config::parse(&text).unwrap();
    assert!(!config.kafka.create_topics, "the roles must not race the creation step");
    let partitions = format!("--partitions {}", config.kafka.partitions);
    let topics = &config.kafka.topics;
    let mut needed =
        vec![topics.spans.clone(), topics.metrics.clone(), topics.logs.clone(), topics.sampled_spans.clone()];
    needed.extend(needed.clone().iter().map(|t| tailgate_proto::headers::dead_letter_topic(t)));
    for topic in needed {
        assert!(
            script.contains(&format!(" {topic} ")) || script.contains(&format!(" {topic};")),
            "{topic} not created"
        );
    }
    assert!(script.contains(&format!("--topic {} {partitions}", topics.decisions)), "decisions topic");
    assert!(
        script.contains("cleanup.policy=delete --config retention.ms="),
        "decisions deleted by time, not compacted"
    );
    assert_eq!(script.matches(&partitions).count(), 2, "every create uses kafka.partitions");
}

/// The compose stack and the Kubernetes config name the Apache Kafka the suite runs, and the suite runs the version
/// its `pom.xml` resolves.
#[test]
fn the_deployments_pin_the_apache_kafka_the_suite_runs() {
    let version = crate::harness::apache_kafka::VERSION;
    let pom = std::fs::read_to_string(Path::new(ROOT).join("tests/kafka/pom.xml")).unwrap();
    assert!(
        pom.contains(&format!("<kafka.version>{version}</kafka.version>")),
        "tests/kafka/pom.xml resolves {version}"
    );
    let compose = yaml("docker-compose.yml");
    for service in ["kafka", "kafka-init"] {
        assert_eq!(compose["services"][service]["image"].as_str(), Some(format!("apache/kafka:{version}").as_str()));
    }
    let kubernetes = std::fs::read_to_string(Path::new(ROOT).join("deploy/kubernetes/base/tailgate.yaml")).unwrap();
    assert!(kubernetes.contains(&format!("Apache Kafka {version}")), "deploy/kubernetes names the tested version");
}

#[test]
fn hosts_and_ports_agree_between_compose_pipeline_prometheus_nginx_and_grafana() {
    let compose = yaml("docker-compose.yml");
    let services = compose_services(&compose);
    let pipeline = yaml("deploy/compose/tailgate.yaml");
    let port_of = |endpoint: &Value| endpoint.as_str().unwrap().rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let (grpc, http, metrics) = (
        port_of(&pipeline["ingest"]["grpc"]["endpoint"]),
        port_of(&pipeline["ingest"]["http"]["endpoint"]),
        port_of(&pipeline["telemetry"]["metrics"]["endpoint"]),
    );

    // The pipeline's Kafka and backends are compose services, on the ports those images listen on.
    let (kafka, _) = host_port(pipeline["kafka"]["brokers"].as_str().unwrap());
    assert!(services.contains(&kafka));
    let expected = [("jaeger", ("jaeger", 4317)), ("loki", ("loki", 3100))];
    for (exporter, (host, port)) in expected {
        let endpoint = pipeline["exporters"][exporter]["endpoint"].as_str().unwrap();
        assert_eq!(host_port(endpoint), (host.to_owned(), port), "exporters.{exporter}.endpoint");
        assert!(services.contains(host));
    }
    // Prometheus scrapes the exporter's endpoint (exporters.prometheus), keeping the services' job labels.
    assert!(pipeline["exporters"]["prometheus_remote_write"].is_null(), "scrape or remote-write, not both");
    let scrape = port_of(&pipeline["exporters"]["prometheus"]["endpoint"]);
    let prometheus = yaml("deploy/compose/prometheus.yml");
    let job = prometheus["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|job| {
            job["static_configs"][0]["targets"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|t| *t == format!("exporter:{scrape}").as_str())
        })
        .expect("a scrape job for the exporter's endpoint");
    assert_eq!(job["honor_labels"], true);

    // nginx balances over the gateways' configured ports, and listens where compose publishes.
    let nginx = std::fs::read_to_string(Path::new(ROOT).join("deploy/compose/nginx.conf")).unwrap();
    for gateway in ["ingest-1", "ingest-2"] {
        assert!(services.contains(gateway));
        assert!(
            nginx.contains(&format!("server {gateway}:{grpc};"))
                && nginx.contains(&format!("server {gateway}:{http};"))
        );
    }
    assert!(
        nginx.contains(&format!("listen {grpc};"))
            && nginx.contains("grpc_pass")
            && nginx.contains(&format!("listen {http};"))
    );
    let published: Vec<&str> =
        compose["services"]["lb"]["ports"].as_sequence().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(published, [format!("{grpc}:{grpc}"), format!("{http}:{http}")]);
    let loadgen = compose["services"]["loadgen"]["command"].as_sequence().unwrap();
    assert!(loadgen.iter().any(|a| a.as_str() == Some(&format!("lb:{grpc}"))));

    // Prometheus scrapes every Tailgate service on its telemetry port, and loads the alert rules.
    let prometheus = yaml("deploy/compose/prometheus.yml");
    let targets: BTreeSet<String> = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let tailgate: BTreeSet<String> = compose["services"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, s)| s["image"] == "tailgate:dev" && s["command"][0] != "loadgen")
        .map(|(name, _)| format!("{}:{metrics}", name.as_str().unwrap()))
        .collect();
    assert_eq!(targets, tailgate);
    assert_eq!(prometheus["rule_files"][0], "/etc/prometheus/alerts.yaml");
    let mounts = compose["services"]["prometheus"]["volumes"].as_sequence().unwrap();
    assert!(mounts.iter().any(|m| m == "./deploy/alerts.yaml:/etc/prometheus/alerts.yaml:ro"));

    // Grafana's data sources are compose services, linked to each other by uid.
    let datasources = yaml("deploy/grafana/provisioning/datasources/datasources.yaml");
    let list = datasources["datasources"].as_sequence().unwrap();
    let uids: BTreeSet<&str> = list.iter().map(|d| d["uid"].as_str().unwrap()).collect();
    for datasource in list {
        let (host, _) = host_port(datasource["url"].as_str().unwrap());
        assert!(services.contains(&host), "data source host {host}");
    }
    let jaeger = list.iter().find(|d| d["type"] == "jaeger").unwrap();
    assert!(uids.contains(jaeger["jsonData"]["tracesToLogsV2"]["datasourceUid"].as_str().unwrap()));
    assert!(jaeger["jsonData"]["tracesToLogsV2"]["query"].as_str().unwrap().contains("trace_id"));
    // Exemplars on the RED latency panel open the trace in Jaeger.
    let prometheus = list.iter().find(|d| d["type"] == "prometheus").unwrap();
    let destination = &prometheus["jsonData"]["exemplarTraceIdDestinations"][0];
    assert_eq!(
        (destination["name"].as_str(), destination["datasourceUid"].as_str()),
        (Some("trace_id"), jaeger["uid"].as_str())
    );
    let loki = list.iter().find(|d| d["type"] == "loki").unwrap();
    assert!(uids.contains(loki["jsonData"]["derivedFields"][0]["datasourceUid"].as_str().unwrap()));
    assert_eq!(
        loki["jsonData"]["derivedFields"][0]["matcherRegex"], "trace_id",
        "the Loki exporter's structured metadata key"
    );
}

/// Every metric name Tailgate puts in Prometheus: its own `/metrics`, the sampler's RED series and the loadgen's
/// business metrics after remote-write translation.
fn known_metrics() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = tailgate_ingest::metrics::ALL
        .iter()
        .chain(tailgate_sampler::METRICS)
        .chain(tailgate_exporters::metrics::ALL)
        .map(|n| n.to_string())
        .collect();
    let translated = [
        (tailgate_sampler::red::CALLS, "{call}", Kind::Counter),
        (tailgate_sampler::red::DURATION, "ms", Kind::Histogram),
        ("checkout.completed", "{checkout}", Kind::Counter),
        ("cart.abandoned", "{cart}", Kind::Counter),
        ("checkout.value", "{cent}", Kind::Histogram),
        (tailgate_sampler::service_graph::REQUESTS, "", Kind::Counter),
        (tailgate_sampler::service_graph::FAILED, "", Kind::Counter),
        (tailgate_sampler::service_graph::SERVER_SECONDS, "s", Kind::Histogram),
        (tailgate_sampler::service_graph::CLIENT_SECONDS, "s", Kind::Histogram),
    ];
    names.extend(translated.iter().map(|(name, unit, kind)| metric_name(name, unit, *kind).unwrap()));
    names
}

/// Metric names in a PromQL expression (identifiers that aren't functions, keywords or labels).
fn metrics_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
        let word = &tail[..end];
        let before = rest[..start].chars().last();
        let quoted = before == Some('"') || before == Some('$') || before == Some('.');
        if !quoted
            && (word.starts_with("tailgate_")
                || word.contains("_total")
                || word.ends_with("_bucket")
                || word.ends_with("_sum")
                || word.ends_with("_count"))
        {
            out.push(word.to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn check_metric(name: &str, known: &BTreeSet<String>, source: &str) {
    let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
    assert!(known.contains(name) || known.contains(base), "{source} queries `{name}`, which Tailgate does not export");
}

#[test]
fn dashboards_are_valid_json_and_query_only_metrics_tailgate_exports() {
    let known = known_metrics();
    let dashboards = files("json");
    assert_eq!(dashboards.len(), 2);
    let mut queried = 0;
    for path in dashboards {
        let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
        for panel in dashboard["panels"].as_array().unwrap() {
            assert!(!panel["description"].as_str().unwrap_or("").is_empty(), "every panel says what it means");
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let metrics = metrics_in(expr);
                assert!(!metrics.is_empty(), "{expr}");
                for metric in metrics {
                    check_metric(&metric, &known, &path.display().to_string());
                    queried += 1;
                }
            }
        }
    }
    // Every metric name of every target, counted as `metrics_in` finds them: 16 in checkout.json, 14 in
    // pipeline-health.json. A query that stops naming a metric (and so stops being checked) shows here.
    assert_eq!(queried, 30, "metric names the two dashboards query");
}

#[test]
fn alert_rules_query_only_metrics_tailgate_exports() {
    let known = known_metrics();
    let rules = yaml("deploy/alerts.yaml");
    let mut alerts = BTreeSet::new();
    for rule in rules["groups"][0]["rules"].as_sequence().unwrap() {
        alerts.insert(rule["alert"].as_str().unwrap().to_owned());
        for metric in metrics_in(rule["expr"].as_str().unwrap()) {
            check_metric(&metric, &known, "deploy/alerts.yaml");
        }
        assert!(rule["annotations"]["summary"].is_string());
    }
    for needed in [
        "TailgateExporterLagGrowing",
        "TailgateSamplerLagGrowing",
        "TailgateDeadLetters",
        "TailgateIngestRejecting",
        "TailgateEarlyDecisions",
        "TailgateExporterBackendDown",
    ] {
        assert!(alerts.contains(needed), "{needed}");
    }
}

#[test]
fn kubernetes_manifests_are_complete() {
    let base = Path::new(ROOT).join("deploy/kubernetes/base");
    let kustomization = yaml("deploy/kubernetes/base/kustomization.yaml");
    let mut kinds = BTreeSet::new();
    let pipeline = yaml("deploy/kubernetes/base/tailgate.yaml");
    let partitions = pipeline["kafka"]["partitions"].as_u64().unwrap();
    let grace = 20; // shutdown.grace's default, which the config keeps
    assert!(pipeline["shutdown"].is_null());
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let path = base.join(resource.as_str().unwrap());
        let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} missing", path.display()));
        for document in serde_yaml::Deserializer::from_str(&text) {
            let manifest = Value::deserialize(document).unwrap();
            let kind = manifest["kind"].as_str().unwrap().to_owned();
            assert!(
                manifest["apiVersion"].is_string() && manifest["metadata"]["name"].is_string(),
                "{}",
                path.display()
            );
            if kind == "Deployment" {
                let name = manifest["metadata"]["name"].as_str().unwrap();
                let spec = &manifest["spec"]["template"]["spec"];
                assert!(
                    spec["terminationGracePeriodSeconds"].as_u64().unwrap() > grace,
                    "{name}: grace above shutdown.grace"
                );
                let container = &spec["containers"][0];
                let role = container["args"][0].as_str().unwrap();
                assert!(["ingest", "sampler", "exporter"].contains(&role), "{name}: {role}");
                assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health", "{name}");
                assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready", "{name}");
                assert!(
                    container["resources"]["requests"]["cpu"].is_string()
                        && container["resources"]["limits"]["memory"].is_string(),
                    "{name}"
                );
                assert_eq!(container["args"][2], "/etc/tailgate/tailgate.yaml");
                assert_eq!(spec["volumes"][0]["configMap"]["name"], "tailgate-config");
                assert_eq!(
                    manifest["spec"]["selector"]["matchLabels"],
                    manifest["spec"]["template"]["metadata"]["labels"]
                );
            }
            if kind == "ScaledObject" {
                assert!(
                    manifest["spec"]["maxReplicaCount"].as_u64().unwrap() <= partitions,
                    "samplers beyond the partition count idle"
                );
                assert_eq!(
                    manifest["spec"]["triggers"][0]["metadata"]["consumerGroup"],
                    tailgate_kafka::KafkaConfig::default().consumer.sampler_group().as_str()
                );
            }
            kinds.insert(kind);
        }
    }
    for kind in ["Deployment", "Service", "HorizontalPodAutoscaler", "ScaledObject", "PodDisruptionBudget", "Namespace"]
    {
        assert!(kinds.contains(kind), "{kind} missing");
    }
    let generated = &kustomization["configMapGenerator"][0];
    assert_eq!(generated["name"], "tailgate-config");
    assert!(base.join(generated["files"][0].as_str().unwrap()).exists());
    let overlay = yaml("deploy/kubernetes/overlays/production/kustomization.yaml");
    assert_eq!(overlay["resources"][0], "../../base");
}

/// Schema validation with `kubernetes-validate` (Kubernetes' own OpenAPI schemas, bundled; installed by
/// `tests/run.sh`), strict: an unknown or misspelt field fails. KEDA's `ScaledObject` has no bundled schema; the
/// structural test above checks it.
#[test]
fn kubernetes_manifests_pass_the_kubernetes_schemas() {
    let python = crate::harness::python();
    let program = Path::new(python.get_program()).with_file_name("kubernetes-validate");
    let manifests: Vec<PathBuf> = files("yaml")
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("/kubernetes/")
                && !p.ends_with("kustomization.yaml")
                && !p.ends_with("tailgate.yaml")
        })
        .collect();
    // Every Kubernetes manifest the repository ships: the base's five and the instrumented service.
    let names: Vec<String> = manifests.iter().map(|p| p.strip_prefix(ROOT).unwrap().display().to_string()).collect();
    assert_eq!(
        names,
        [
            "deploy/kubernetes/base/exporter.yaml",
            "deploy/kubernetes/base/ingest.yaml",
            "deploy/kubernetes/base/namespace.yaml",
            "deploy/kubernetes/base/pdb.yaml",
            "deploy/kubernetes/base/sampler.yaml",
            "deploy/kubernetes/instrumented-service.yaml"
        ],
        "the manifests validated"
    );
    let output = std::process::Command::new(&program)
        .args(["--kubernetes-version", "1.30.0", "--strict"])
        .args(&manifests)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}; tests/run.sh installs it", program.display()));
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{report}");
    assert!(!report.contains("ERROR"), "{report}");
    for kind in [
        "deployment/tailgate-ingest",
        "service/tailgate-ingest",
        "horizontalpodautoscaler/tailgate-ingest",
        "deployment/tailgate-sampler",
        "deployment/tailgate-exporter",
        "poddisruptionbudget/tailgate-ingest",
        "deployment/checkout",
    ] {
        assert!(report.contains(&format!("passed for resource {kind}")), "{kind} not validated:\n{report}");
    }
}

use serde::Deserialize as _;

//! Keys of an OpenTelemetry Collector config, explained: a team moving from the Collector pastes what it knows
//! (`processors: { batch, memory_limiter }`, `exporters: { otlp/jaeger }`, `service.pipelines`), and `validate`
//! says what does that job in Tailgate instead of a bare "unknown key".

use tailgate_config::Problems;

/// `problems` with each "unknown key" that is a Collector key replaced by what to do instead; `processors` is
/// explained per processor it lists.
pub fn explain(problems: Problems, text: &str) -> Problems {
    let mut explained = Problems::default();
    for problem in problems.iter() {
        if problem.message != "unknown key" {
            explained.push(problem.path.clone(), problem.message.clone());
        } else if problem.path == "processors" && !processors(text).is_empty() {
            for name in processors(text) {
                explained.push(format!("processors.{name}"), processor(&name));
            }
        } else if let Some(message) = key(&problem.path) {
            explained.push(problem.path.clone(), message);
        } else {
            explained.push(problem.path.clone(), problem.message.clone());
        }
    }
    explained
}

/// The names under `processors:`, in order.
fn processors(text: &str) -> Vec<String> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
    match value.get("processors") {
        Some(serde_yaml::Value::Mapping(map)) => map.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

fn processor(name: &str) -> String {
    let kind = name.split('/').next().unwrap_or(name);
    match kind {
        "batch" => "is not needed: the gateway writes each request to Kafka as it arrives (kafka.producer.linger \
                    batches the records) and each exporter batches for its backend (exporters.<name>.batch)"
            .to_owned(),
        "memory_limiter" => {
            "is not needed: memory is bounded by ingest.max_in_flight_bytes (past it, clients are told \
                             to retry), sampler.max_buffered_bytes and each exporter's batch.max_bytes"
                .to_owned()
        }
        "resource" => "is ingest.resource here, a list of the same actions: \
                       `- { key: deployment.environment, value: production, action: upsert }`"
            .to_owned(),
        "tail_sampling" => "is the sampler section here: sampler.decision_wait and sampler.policies take the same \
                            policies"
            .to_owned(),
        "redaction" => "is ingest.redaction here, with the same keys".to_owned(),
        _ => "unknown key: Tailgate's processing is fixed (ingest.resource, ingest.redaction, the sampler); it has no \
              Collector processor section"
            .to_owned(),
    }
}

fn key(path: &str) -> Option<String> {
    let message = match path {
        "receivers" => "Tailgate's receiver is OTLP, configured as ingest.grpc and ingest.http (endpoint, tls, auth)",
        "service" => {
            "Tailgate's pipelines are fixed: spans go gateway → Kafka → sampler → exporters.jaeger, metrics \
                      and logs gateway → Kafka → their exporter; each role is a subcommand (tailgate ingest, sampler, \
                      exporter, or all-in-one)"
        }
        "extensions" => {
            "health_check is /health and /ready on telemetry.metrics.endpoint; bearertokenauth and oidc \
                         are ingest.grpc.auth and ingest.http.auth"
        }
        "connectors" => "spanmetrics is the sampler's RED metrics (sampler.red_metrics)",
        "exporters.prometheusremotewrite" => "is exporters.prometheus_remote_write here",
        _ => {
            let exporter = path.strip_prefix("exporters.")?;
            let kind = exporter.split('/').next().unwrap_or(exporter);
            if kind == "otlp" || kind == "otlphttp" {
                "is exporters.jaeger here: OTLP/gRPC to Jaeger, Tempo or any OTLP receiver"
            } else {
                return None;
            }
        }
    };
    Some(message.to_owned())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The seed's Collector pipeline, pasted as it is.
    const SEED: &str = r#"
receivers:
  otlp: { protocols: { grpc: { endpoint: 0.0.0.0:4317 } } }
processors:
  batch: { timeout: 5s, send_batch_size: 1024 }
  memory_limiter: { check_interval: 1s, limit_mib: 512 }
  resource: { attributes: [ { key: deployment.environment, value: production, action: upsert } ] }
  tail_sampling: { decision_wait: 10s }
exporters:
  otlp/jaeger: { endpoint: jaeger:4317 }
  prometheus: { endpoint: 0.0.0.0:8889 }
  loki: { endpoint: http://loki:3100/loki/api/v1/push }
service: { pipelines: { traces: { receivers: [otlp] } } }
"#;

    #[test]
    fn collector_keys_say_what_does_their_job_here() {
        let problems = Config::parse(SEED).unwrap_err();
        let found: Vec<(&str, &str)> =
            problems.iter().map(|p| (p.path.as_str(), p.message.split(':').next().unwrap_or_default())).collect();
        assert_eq!(
            found,
            [
                (
                    "receivers",
                    "Tailgate's receiver is OTLP, configured as ingest.grpc and ingest.http (endpoint, tls, auth)"
                ),
                ("processors.batch", "is not needed"),
                ("processors.memory_limiter", "is not needed"),
                ("processors.resource", "is ingest.resource here, a list of the same actions"),
                ("processors.tail_sampling", "is the sampler section here"),
                ("exporters.otlp/jaeger", "is exporters.jaeger here"),
                ("service", "Tailgate's pipelines are fixed"),
            ]
        );
    }

    #[test]
    fn an_empty_processors_section_is_still_reported() {
        let problems = Config::parse("processors: {}\n").unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["processors"]);
    }
}

//! The configuration file: one YAML document with a section per concern.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};
use tailgate_exporters::ExportersConfig;
use tailgate_ingest::IngestConfig;
use tailgate_kafka::KafkaConfig;
use tailgate_sampler::SamplerConfig;

use crate::telemetry::TelemetryConfig;

/// The whole file. Every section has defaults that work with the embedded broker.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Kafka connection, topics and producer.
    pub kafka: KafkaConfig,
    /// The in-process broker `tailgate all-in-one` starts.
    pub embedded_broker: EmbeddedBrokerConfig,
    /// The OTLP ingest gateway.
    pub ingest: IngestConfig,
    /// Tail sampling: policies, buffering, RED metrics.
    pub sampler: SamplerConfig,
    /// Backends: Jaeger (OTLP/gRPC), Prometheus remote-write, Loki. Only the configured ones run.
    pub exporters: ExportersConfig,
    /// Tailgate's own metrics and logs.
    pub telemetry: TelemetryConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
}

/// The `embedded_broker:` section, used by `tailgate all-in-one` only.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddedBrokerConfig {
    /// Start the broker. When off, `all-in-one` uses `kafka.brokers`.
    pub enabled: bool,
    /// Kafka listener; other tools reach the broker here. `kafka.brokers` is set to it.
    pub listen: String,
    /// Where the broker keeps its log (a SQLite database), so data outlives a restart.
    pub data_dir: PathBuf,
    /// How long records are kept: older ones are deleted (every hundredth of it, at least every 5 s) and their space
    /// reused, so the disk holds about this much of the pipeline's traffic.
    pub retention: Duration,
    /// How much the broker's database may hold (its pages in use): past it, records are kept for less than
    /// `retention` (in proportion, never less than a hundredth of it) until it fits, oldest deleted first; the
    /// decisions topic (the sampler's lookback) and compacted topics are left alone. Kafka's `retention.bytes`
    /// bounds each partition; this bounds the whole database. The file keeps its largest size (SQLite reuses freed
    /// pages), and its write-ahead log comes on top.
    pub retention_bytes: ByteSize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            enabled: true,
            listen: "127.0.0.1:9092".to_owned(),
            data_dir: PathBuf::from("./data"),
            retention: Duration::from_secs(24 * 3600),
            retention_bytes: ByteSize::mib(10 << 10),
        }
    }
}

/// The `shutdown:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ShutdownConfig {
    /// How long a role may take, after SIGTERM, to finish in-flight work and flush. Set the Kubernetes
    /// `terminationGracePeriodSeconds` a little above it.
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig { grace: Duration::from_secs(20) }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {count} problem(s):\n{problems}", count = problems.len(), problems = indent(problems))]
    Invalid { path: String, problems: Problems },
}

fn indent(problems: &Problems) -> String {
    problems.to_string().lines().map(|l| format!("  - {l}")).collect::<Vec<_>>().join("\n")
}

impl Config {
    /// Reads, parses, applies environment overrides to and validates the file at `path`, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let name = path.map_or_else(|| "<defaults>".to_owned(), |p| p.display().to_string());
        let mut config = match path {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: name.clone(), source })?;
                Config::parse(&text).map_err(|problems| ConfigError::Invalid { path: name.clone(), problems })?
            }
            None => Config::default(),
        };
        config.kafka.apply_env(|key| std::env::var(key).ok());
        config.validate().map_err(|problems| ConfigError::Invalid { path: name, problems })?;
        Ok(config)
    }

    /// Parses YAML; an empty document is the defaults.
    pub fn parse(text: &str) -> Result<Config, Problems> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        tailgate_config::from_yaml(text).map_err(|problems| crate::collector_keys::explain(problems, text))
    }

    /// Every problem, with its path.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        self.kafka.validate("kafka", &mut problems);
        self.ingest.validate("ingest", &mut problems);
        self.sampler.validate("sampler", &mut problems);
        self.exporters.validate("exporters", &mut problems);
        self.telemetry.validate("telemetry", &mut problems);
        if self.embedded_broker.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(
                "embedded_broker.listen",
                format!("`{}` is not an address like 127.0.0.1:9092", self.embedded_broker.listen),
            );
        }
        if self.embedded_broker.retention.get() < std::time::Duration::from_secs(10) {
            problems.push("embedded_broker.retention", "must be at least 10s");
        }
        if self.embedded_broker.retention_bytes.get() < 1 << 20 {
            problems.push("embedded_broker.retention_bytes", "must be at least 1MiB");
        }
        if self.shutdown.grace.get().is_zero() {
            problems.push("shutdown.grace", "must be longer than 0s");
        }
        let max_record = self.kafka.producer.max_message_bytes.get();
        if self.ingest.max_request_bytes.get() > 64 * max_record.max(1) {
            problems.push(
                "ingest.max_request_bytes",
                "is more than 64 times kafka.producer.max_message_bytes; a request would become too many records",
            );
        }
        // A request fully read may still wait on Kafka for the delivery timeout: the idle timer must not cut it.
        let busiest = self.ingest.read_timeout.get() + self.kafka.producer.delivery_timeout.get();
        if self.ingest.idle_timeout.get() <= busiest {
            problems.push(
                "ingest.idle_timeout",
                format!(
                    "must be longer than ingest.read_timeout plus kafka.producer.delivery_timeout ({}): a request \
                     still arriving or waiting on Kafka would be cut",
                    humantime::format_duration(busiest)
                ),
            );
        }
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let yaml = "
kafka:
  brokers: ''
  partitions: 0
  producer: { compression: brotli }
ingest:
  grpc: { endpoint: 'nowhere' }
  max_in_flight_bytes: 1KiB
  resource:
    - { key: '', action: upsert }
telemetry: { logs: { level: chatty } }
";
        // Type errors stop parsing at the first one; fix it and the rest are listed together.
        let problems = Config::parse(yaml).unwrap_err();
        assert_eq!(problems.iter().next().unwrap().path, "kafka.producer.compression");

        let config = Config::parse(&yaml.replace("brotli", "zstd")).unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kafka.brokers",
                "kafka.partitions",
                "ingest.grpc.endpoint",
                "ingest.max_in_flight_bytes",
                "ingest.resource[0].key",
                "ingest.resource[0].value",
                "telemetry.logs.level",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_listed_with_their_paths() {
        let problems =
            Config::parse("kafka: { brokres: x }\ningest: { grpc: { endpont: y } }\nsamplr: {}\n").unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["kafka.brokres", "ingest.grpc.endpont", "samplr"]);
    }

    #[test]
    fn exporter_keys_are_checked_with_their_paths() {
        let yaml = "
exporters:
  jaeger: { endpoint: 'jaeger:4317', compresion: gzip, retry_on_failure: { multiplier: 0.5 } }
  loki: { endpoint: 'http://loki:3100/loki/api/v1/push', tls: { server_name_override: loki.internal }, labels: [service.name] }
";
        let problems = Config::parse(yaml).unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["exporters.jaeger.compresion"]);
        let config = Config::parse(&yaml.replace("compresion", "compression")).unwrap();
        let problems = config.validate().unwrap_err();
        let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["exporters.jaeger.endpoint", "exporters.jaeger.retry_on_failure.multiplier", "exporters.loki.endpoint"]
        );
    }

    #[test]
    fn the_environment_overrides_the_brokers() {
        let mut config = Config::default();
        config.kafka.apply_env(|key| (key == "TAILGATE_KAFKA_BROKERS").then(|| "kafka-0:9092,kafka-1:9092".to_owned()));
        assert_eq!(config.kafka.brokers, "kafka-0:9092,kafka-1:9092");
    }

    #[test]
    fn the_defaults_are_valid() {
        Config::default().validate().unwrap();
        Config::parse("").unwrap().validate().unwrap();
    }
}

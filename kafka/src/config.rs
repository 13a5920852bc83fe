use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tailgate_config::{ByteSize, Duration, Problems};

use crate::security::{self, SecurityConfig};

/// The `kafka:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` bootstrap brokers. Overridden by `TAILGATE_KAFKA_BROKERS`.
    pub brokers: String,
    /// Topic names per signal.
    pub topics: Topics,
    /// Partitions of each topic. Used when Tailgate creates a topic, and checked against existing topics.
    pub partitions: u32,
    /// Replication factor used when Tailgate creates a topic.
    pub replication_factor: i32,
    /// Create missing topics at start-up. Off where topics are managed elsewhere.
    pub create_topics: bool,
    /// Producer settings.
    pub producer: ProducerConfig,
    /// Consumer-group settings of the sampler and exporter workers.
    pub consumer: ConsumerConfig,
    /// TLS and SASL to the brokers, for every client of every role.
    pub security: SecurityConfig,
    /// Extra librdkafka properties for every client, for the rare one Tailgate has no key for (e.g.
    /// `socket.keepalive.enable`). Security properties belong in `security`.
    pub client: BTreeMap<String, String>,
    /// Settings of every topic Tailgate creates (`retention.ms`, `cleanup.policy`, …), below the ones a topic
    /// needs for itself (the decisions topic's compaction). `all-in-one` sets the embedded broker's retention here.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_config: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_owned(),
            topics: Topics::default(),
            partitions: 12,
            replication_factor: 1,
            create_topics: true,
            producer: ProducerConfig::default(),
            consumer: ConsumerConfig::default(),
            security: SecurityConfig::default(),
            client: BTreeMap::new(),
            topic_config: BTreeMap::new(),
        }
    }
}

/// Topic names.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Topics {
    /// Spans as received, all of them.
    pub spans: String,
    /// Metrics: the services' own and the sampler's RED metrics.
    pub metrics: String,
    /// Log records.
    pub logs: String,
    /// Spans of the traces the samplers kept; the Jaeger exporter reads it.
    pub sampled_spans: String,
    /// Sampling decisions by trace ID (compacted), so they outlive the worker that made them.
    pub decisions: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            spans: "otlp_spans".to_owned(),
            metrics: "otlp_metrics".to_owned(),
            logs: "otlp_logs".to_owned(),
            sampled_spans: "sampled_spans".to_owned(),
            decisions: "sampling_decisions".to_owned(),
        }
    }
}

/// Record compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// The `kafka.producer:` section.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ProducerConfig {
    /// Compression of record batches.
    pub compression: Compression,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// How long a record may take to be acknowledged before its request fails with a retryable error
    /// (`message.timeout.ms`). Keep it below the clients' export timeout (10s in the OpenTelemetry SDKs) so they
    /// hear a clear "retry" rather than time out.
    pub delivery_timeout: Duration,
    /// Largest record the producer writes (`message.max.bytes`). Requests are split to fit; must not exceed the
    /// broker's and topic's `message.max.bytes`.
    pub max_message_bytes: ByteSize,
    /// The idempotent producer (`enable.idempotence`): a retried batch is written once and in order. Turn it off
    /// only for a broker whose idempotent producer is broken — Tansu 0.6, the embedded broker, panics when a
    /// producer's batch carries an epoch it did not record (after a paused or reconnecting producer), and then
    /// refuses every request; `all-in-one` therefore turns it off for its embedded broker unless this is set.
    /// Off, a retried batch may be written twice (duplicates, which every stage tolerates and counts) and one
    /// request is in flight per connection, so that retries cannot reorder. Unset: on.
    pub idempotence: Option<bool>,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            compression: Compression::Lz4,
            linger: Duration::from_millis(5),
            delivery_timeout: Duration::from_secs(5),
            max_message_bytes: ByteSize::b(1_000_000),
            idempotence: None,
        }
    }
}

/// The `kafka.consumer:` section: the groups' names, and how fast a group notices a worker is gone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    /// A worker that sends no heartbeat for this long is taken out of its group and its partitions reassigned
    /// (`session.timeout.ms`; heartbeats every third of it). Shorter means a crashed worker's partitions move
    /// sooner; it must lie within the brokers' `group.min/max.session.timeout.ms` (6 s to 30 min by default).
    /// Unset: librdkafka's default, 45 s. (On Tansu 0.6 a 10 s session left a restarted worker without partitions;
    /// see tests/sampler/faults.rs.)
    pub session_timeout: Option<Duration>,
    /// Static group membership (`group.instance.id`, KIP-345): a stable name per worker — a StatefulSet pod's
    /// name, say. A worker restarted under the same name gets its partitions back at once, without a rebalance
    /// and without waiting `session_timeout`. Must be unique per worker: two running workers with the same name
    /// fence each other. Overridden by `TAILGATE_GROUP_INSTANCE_ID`. Unset: dynamic membership.
    pub group_instance_id: Option<String>,
    /// How a group shares partitions (`partition.assignment.strategy`). `cooperative-sticky` (KIP-429): a member
    /// joining or leaving moves only the partitions that must move; every other member keeps consuming, and keeps
    /// its buffered traces and open batches, through the rebalance. `range`: eager — every rebalance revokes every
    /// partition of every member first, so each member commits, drops its state and re-reads. Unset:
    /// `cooperative-sticky`, except that `all-in-one` takes `range` for its embedded Tansu, which has handed one
    /// partition to two members at once under the cooperative protocol.
    pub assignment_strategy: Option<AssignmentStrategy>,
    /// The start of every consumer group's name: the samplers are `<prefix>-sampler`, each exporter
    /// `<prefix>-exporter-<name>`. Two pipelines on one Kafka cluster need prefixes of their own, or their workers
    /// join each other's groups.
    pub group_prefix: String,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            session_timeout: None,
            group_instance_id: None,
            assignment_strategy: None,
            group_prefix: "tailgate".to_owned(),
        }
    }
}

impl ConsumerConfig {
    /// The sampler workers' consumer group.
    pub fn sampler_group(&self) -> String {
        format!("{}-sampler", self.group_prefix)
    }

    /// Exporter `name`'s consumer group.
    pub fn exporter_group(&self, name: &str) -> String {
        format!("{}-exporter-{name}", self.group_prefix)
    }
}

/// Kafka's `partition.assignment.strategy`, the two Tailgate is tested with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentStrategy {
    #[default]
    #[serde(rename = "cooperative-sticky")]
    CooperativeSticky,
    #[serde(rename = "range")]
    Range,
}

impl AssignmentStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignmentStrategy::CooperativeSticky => "cooperative-sticky",
            AssignmentStrategy::Range => "range",
        }
    }
}

impl KafkaConfig {
    /// Applies the environment overrides for deployment-specific values.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(brokers) = get("TAILGATE_KAFKA_BROKERS").filter(|b| !b.trim().is_empty()) {
            self.brokers = brokers;
        }
        if let Some(id) = get("TAILGATE_GROUP_INSTANCE_ID").filter(|id| !id.trim().is_empty()) {
            self.consumer.group_instance_id = Some(id);
        }
    }

    pub fn validate(&self, path: &str, problems: &mut Problems) {
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            problems.push(format!("{path}.brokers"), "must be a comma-separated list of host:port");
        }
        for (name, topic) in [
            ("spans", &self.topics.spans),
            ("metrics", &self.topics.metrics),
            ("logs", &self.topics.logs),
            ("sampled_spans", &self.topics.sampled_spans),
        ] {
            let valid = !topic.is_empty()
                && topic.len() <= 249
                && topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !valid {
                problems.push(
                    format!("{path}.topics.{name}"),
                    format!("`{topic}` is not a Kafka topic name (1-249 of a-z, A-Z, 0-9, '.', '_', '-')"),
                );
            }
        }
        if self.partitions == 0 {
            problems.push(format!("{path}.partitions"), "must be at least 1");
        }
        if self.replication_factor < 1 {
            problems.push(format!("{path}.replication_factor"), "must be at least 1");
        }
        if self.producer.delivery_timeout.get().is_zero() {
            problems.push(format!("{path}.producer.delivery_timeout"), "must be longer than 0s");
        }
        if self.producer.linger.get() > std::time::Duration::from_secs(1) {
            problems.push(format!("{path}.producer.linger"), "must be at most 1s: it adds to every request's latency");
        }
        let max = self.producer.max_message_bytes.get();
        if !(64 * 1024..=1_000_000_000).contains(&max) {
            problems.push(format!("{path}.producer.max_message_bytes"), "must be between 64KiB and 1GB");
        }
        let session = self.consumer.session_timeout.map(|s| s.get());
        if session
            .is_some_and(|s| !(std::time::Duration::from_secs(6)..=std::time::Duration::from_secs(1800)).contains(&s))
        {
            problems.push(
                format!("{path}.consumer.session_timeout"),
                "must be between 6s and 30m (the brokers' default group.min/max.session.timeout.ms)",
            );
        }
        let prefix = &self.consumer.group_prefix;
        let valid = !prefix.is_empty()
            && prefix.len() <= 200
            && prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid {
            problems.push(format!("{path}.consumer.group_prefix"), "must be 1-200 of a-z, A-Z, 0-9, '.', '_', '-'");
        }
        if let Some(id) = &self.consumer.group_instance_id {
            if id.trim().is_empty() || id.len() > 249 {
                problems.push(format!("{path}.consumer.group_instance_id"), "must be 1-249 characters");
            }
        }
        self.security.validate(&format!("{path}.security"), problems);
        for key in self.client.keys() {
            if security::is_security_property(key) {
                problems.push(
                    format!("{path}.client.{key}"),
                    "is a security property: set it with kafka.security (protocol, sasl, tls), where it is checked",
                );
            } else if MANAGED.contains(&key.as_str()) {
                problems.push(
                    format!("{path}.client.{key}"),
                    "is set by Tailgate to keep its delivery guarantee; use the matching kafka.* option if there is one",
                );
            } else if let Err(message) = check_property(key, &self.client[key]) {
                problems.push(format!("{path}.client.{key}"), message);
            }
        }
    }
}

/// Asks librdkafka whether it takes `key: value`, now rather than when the first client starts. Its answer names
/// the property and may quote the value, which may be a secret: the value is kept out of the message, here and so
/// in every log line that would have carried librdkafka's error.
fn check_property(key: &str, value: &str) -> Result<(), String> {
    match rdkafka::ClientConfig::new().set(key, value).create_native_config() {
        Ok(_) => Ok(()),
        Err(rdkafka::error::KafkaError::ClientConfig(_, description, _, _)) => Err(unquoted(&description, key)),
        Err(_) => Err("refused by librdkafka".to_owned()),
    }
}

/// `message` with every quoted part but the property's name replaced: librdkafka quotes values, and may cut them
/// short, so replacing the value itself could leave part of it.
fn unquoted(message: &str, key: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    out.push_str(parts.next().unwrap_or_default());
    for (i, part) in parts.enumerate() {
        out.push('"');
        // The first part after a quote is inside quotes, the next outside, and so on.
        out.push_str(if i % 2 == 1 || part == key { part } else { "[REDACTED]" });
    }
    out
}

/// librdkafka properties Tailgate owns, because the delivery guarantee depends on them.
const MANAGED: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "acks",
    "request.required.acks",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "message.max.bytes",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "group.instance.id",
    "session.timeout.ms",
    "partition.assignment.strategy",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        let config: KafkaConfig = serde_yaml::from_str(yaml).unwrap();
        let mut problems = Problems::default();
        config.validate("kafka", &mut problems);
        problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect()
    }

    /// rust-rdkafka's error for a property librdkafka refuses carries the value, and a run logged it when the
    /// first client started: a secret in `kafka.client` (a passphrase, an OAUTHBEARER config) reached the logs. Now the
    /// property is checked at validation, with its path, and the value never appears.
    #[test]
    fn extra_properties_are_checked_by_librdkafka_without_showing_their_values() {
        let found = problems(
            "client: { socket.timeout.ms: 'SECRET-7f3', no.such.property: 'SECRET-8a1', socket.keepalive.enable: 'true' }",
        );
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("kafka.client.no.such.property: "), "{found:?}");
        assert!(found[1].starts_with("kafka.client.socket.timeout.ms: Invalid value"), "{found:?}");
        assert!(!found.iter().any(|p| p.contains("SECRET")), "{found:?}");
    }

    #[test]
    fn security_properties_belong_in_kafka_security() {
        assert_eq!(
            problems("client: { sasl.password: hunter2 }"),
            ["kafka.client.sasl.password: is a security property: set it with kafka.security (protocol, sasl, tls), \
              where it is checked"]
        );
    }

    /// SECURITY.md says kafka.client refuses every credential-bearing property; these got through before.
    #[test]
    fn every_credential_property_is_refused_in_kafka_client() {
        for key in [
            "ssl.keystore.location",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.crl.location",
            "ssl.truststore.location",
        ] {
            let found = problems(&format!("client: {{ {key}: 'SECRET-1' }}"));
            assert_eq!(found.len(), 1, "{key}: {found:?}");
            assert!(found[0].contains("is a security property"), "{key}: {found:?}");
            assert!(!found[0].contains("SECRET"), "{key}: {found:?}");
        }
    }

    #[test]
    fn quoted_parts_of_librdkafkas_messages_are_hidden_but_the_property() {
        assert_eq!(
            unquoted(
                r#"Invalid value "hunter2-cut-sh" for configuration property "sasl.kerberos.kinit.cmd""#,
                "sasl.kerberos.kinit.cmd"
            ),
            r#"Invalid value "[REDACTED]" for configuration property "sasl.kerberos.kinit.cmd""#
        );
    }
}

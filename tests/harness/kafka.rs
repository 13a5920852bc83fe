//! Kafka for tests beside Apache Kafka (`apache_kafka`): librdkafka's MockCluster for injected faults; topics no
//! other test uses, and the `kafka:` config that points at them — as a struct for roles started in this process, as
//! YAML for the binary. (Tansu, the embedded default, is tested through `tailgate all-in-one` itself.)

use std::sync::atomic::{AtomicU32, Ordering};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use rdkafka::ClientConfig;
use tailgate_kafka::{KafkaConfig, Topics};

/// librdkafka's mock cluster, for fault injection.
pub fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster starts")
}

/// A config for `mock` with every topic of the pipeline (and the spans' dead-letter topic) created on it, since
/// MockCluster cannot be asked to create them the way a role does.
pub fn mock_kafka(mock: &MockCluster<'static, DefaultProducerContext>, partitions: u32) -> KafkaConfig {
    let kafka = kafka_config(&mock.bootstrap_servers(), partitions);
    let t = &kafka.topics;
    for topic in [&t.spans, &t.metrics, &t.logs, &t.sampled_spans, &t.decisions] {
        mock.create_topic(topic, partitions as i32, 1).unwrap();
        mock.create_topic(&tailgate_proto::headers::dead_letter_topic(topic), partitions as i32, 1).unwrap();
    }
    kafka
}

/// A producer with librdkafka's defaults, for a test that writes records of its own making (headers, keys,
/// timestamps) straight to a topic.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new().set("bootstrap.servers", brokers).create().expect("a producer for the test's records")
}

/// An ID no other test uses, for its topics and consumer groups.
fn unique_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    )
}

/// Topic names no other test uses.
fn unique_topics(id: &str) -> Topics {
    Topics {
        spans: format!("spans-{id}"),
        metrics: format!("metrics-{id}"),
        logs: format!("logs-{id}"),
        sampled_spans: format!("sampled-{id}"),
        decisions: format!("decisions-{id}"),
    }
}

/// A config for `brokers` with topics and consumer groups of its own: tests share a broker, and a consumer group
/// spans topics, so a member a test SIGKILLs must not hold up another test's rebalance.
pub fn kafka_config(brokers: &str, partitions: u32) -> KafkaConfig {
    let id = unique_id();
    let mut kafka =
        KafkaConfig { brokers: brokers.to_owned(), topics: unique_topics(&id), partitions, ..KafkaConfig::default() };
    kafka.consumer.group_prefix = format!("tailgate-{id}");
    kafka
}

/// The `kafka:` section of a config file for the binary: all of `kafka`, as the binary would read it back.
pub fn kafka_yaml(kafka: &KafkaConfig) -> String {
    #[derive(serde::Serialize)]
    struct Section<'a> {
        kafka: &'a KafkaConfig,
    }
    serde_yaml::to_string(&Section { kafka }).expect("the kafka section serializes")
}

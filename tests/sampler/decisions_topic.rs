//! The decisions topic must not grow forever, nor lose decisions before the lookback: it is created
//! `cleanup.policy=delete` with a retention of twice the decision lookback (its records batch many traces'
//! decisions, so there is nothing to compact by), and an existing topic with other settings — an earlier version's
//! `compact,delete`, or compact only — is reported.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use tailgate_kafka::{config_drift, Drift};
use tailgate_sampler::SamplerConfig;

use crate::harness;

/// Default decision_wait 10 s: the lookback is 600 s, the retention twice that.
const EXPECTED: &[(&str, &str)] = &[("cleanup.policy", "delete"), ("retention.ms", "1200000")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decisions_topic_is_deleted_after_twice_the_lookback() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let sampler = harness::start_sampler(&SamplerConfig::default(), &kafka, "tailgate-sampler").await;
    let drift = config_drift(&kafka, &kafka.topics.decisions, EXPECTED, Duration::from_secs(10)).await.unwrap();
    assert_eq!(drift, Vec::<Drift>::new());
    sampler.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decisions_topic_made_compact_only_is_reported() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    let topic = NewTopic::new(&kafka.topics.decisions, 2, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    for result in admin.create_topics([&topic], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
    let drift = config_drift(&kafka, &kafka.topics.decisions, EXPECTED, Duration::from_secs(10)).await.unwrap();
    let keys: Vec<&str> = drift.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["cleanup.policy", "retention.ms"], "{drift:?}");
    assert_eq!(drift[0].actual.as_deref(), Some("compact"));
}

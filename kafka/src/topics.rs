use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::{client_config, KafkaConfig};

/// A topic Tailgate cannot use as configured.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(
        "topic `{topic}` has {actual} partitions but kafka.partitions is {expected}: a trace's partition is \
         murmur2(trace_id) mod partitions, so a different count would send the spans of one trace to different \
         samplers. Set kafka.partitions to {actual}, or create the topics anew"
    )]
    PartitionMismatch { topic: String, expected: u32, actual: usize },
    #[error("topic `{topic}` does not exist and kafka.create_topics is false")]
    Missing { topic: String },
    #[error("cannot create topic `{topic}`: {source}")]
    Create { topic: String, source: KafkaError },
    #[error("cannot reach Kafka at {brokers}: {source}")]
    Unreachable { brokers: String, source: KafkaError },
}

/// Makes sure each topic exists with `config.partitions` partitions, creating missing ones when allowed.
/// `extra_config` holds topic settings for topics created here (e.g. `cleanup.policy=compact`).
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[(&str, &[(&str, &str)])],
    timeout: Duration,
) -> Result<(), TopicError> {
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        client_config(config)
            .and_then(|client| client.create())
            .map_err(|source| TopicError::Unreachable { brokers: config.brokers.clone(), source })?,
    );

    for (topic, extra) in topics {
        match partition_count(&admin, topic, timeout, &config.brokers).await? {
            Some(actual) if actual == config.partitions as usize => continue,
            Some(actual) => {
                return Err(TopicError::PartitionMismatch {
                    topic: topic.to_string(),
                    expected: config.partitions,
                    actual,
                })
            }
            None if !config.create_topics => return Err(TopicError::Missing { topic: topic.to_string() }),
            None => {}
        }
        let mut new_topic =
            NewTopic::new(topic, config.partitions as i32, TopicReplication::Fixed(config.replication_factor));
        for (key, value) in *extra {
            new_topic = new_topic.set(key, value);
        }
        let results = admin
            .create_topics([&new_topic], &AdminOptions::new().operation_timeout(Some(timeout)))
            .await
            .map_err(|source| TopicError::Create { topic: topic.to_string(), source })?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic, partitions = config.partitions, "created topic"),
                // Another gateway created it first; check it like an existing topic.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(TopicError::Create { topic: topic.to_string(), source: KafkaError::AdminOp(code) })
                }
            }
        }
        // Creation is asynchronous in Kafka; wait until the topic is visible with its partitions.
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match partition_count(&admin, topic, timeout, &config.brokers).await? {
                Some(actual) if actual == config.partitions as usize => break,
                Some(actual) if actual > 0 => {
                    return Err(TopicError::PartitionMismatch {
                        topic: topic.to_string(),
                        expected: config.partitions,
                        actual,
                    })
                }
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err(TopicError::Missing { topic: topic.to_string() })
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    Ok(())
}

/// Partitions of `topic`, or `None` if it does not exist.
async fn partition_count(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    topic: &str,
    timeout: Duration,
    brokers: &str,
) -> Result<Option<usize>, TopicError> {
    // Metadata for all topics rather than for `topic`: asking for one topic by name can auto-create it on brokers
    // with `auto.create.topics.enable`, with the broker's default partition count.
    let client = Arc::clone(admin);
    let metadata = tokio::task::spawn_blocking(move || client.inner().fetch_metadata(None, timeout))
        .await
        .map_err(|_| TopicError::Unreachable { brokers: brokers.to_owned(), source: KafkaError::Canceled })?
        .map_err(|source| TopicError::Unreachable { brokers: brokers.to_owned(), source })?;
    Ok(metadata.topics().iter().find(|t| t.name() == topic).and_then(|t| match t.error() {
        None => Some(t.partitions().len()),
        Some(_) => None,
    }))
}

/// A topic setting that is not what Tailgate needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub key: String,
    /// What the topic has (`None`: not reported).
    pub actual: Option<String>,
    pub expected: String,
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is {} but should be {}", self.key, self.actual.as_deref().unwrap_or("unset"), self.expected)
    }
}

/// The settings of an existing `topic` that differ from `expected`. A list value such as `cleanup.policy`
/// (`compact,delete`) matches in any order.
pub async fn config_drift(
    config: &KafkaConfig,
    topic: &str,
    expected: &[(&str, &str)],
    timeout: Duration,
) -> Result<Vec<Drift>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)?.create()?;
    let results = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new().request_timeout(Some(timeout)))
        .await?;
    let resource = results
        .into_iter()
        .next()
        .ok_or_else(|| KafkaError::AdminOpCreation("no answer to DescribeConfigs".into()))?
        .map_err(KafkaError::AdminOp)?;
    let set = |value: &str| {
        let mut items: Vec<String> = value.split(',').map(|v| v.trim().to_owned()).collect();
        items.sort();
        items
    };
    Ok(expected
        .iter()
        .filter_map(|(key, want)| {
            let actual = resource.get(key).and_then(|e| e.value.clone());
            match &actual {
                Some(value) if set(value) == set(want) => None,
                _ => Some(Drift { key: (*key).to_owned(), actual, expected: (*want).to_owned() }),
            }
        })
        .collect())
}

/// Deletes `topic` (a throw-away topic of `tailgate resample`). A failure is returned for the caller to report: the
/// topic then stays until someone deletes it.
pub async fn delete_topic(config: &KafkaConfig, topic: &str, timeout: Duration) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)?.create()?;
    let results = admin.delete_topics(&[topic], &AdminOptions::new().operation_timeout(Some(timeout))).await?;
    for result in results {
        if let Err((_, code)) = result {
            return Err(KafkaError::AdminOp(code));
        }
    }
    Ok(())
}

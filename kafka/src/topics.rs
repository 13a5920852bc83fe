use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer as _};
use rdkafka::ClientContext;

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
    #[error(transparent)]
    Unreachable(Box<Unreachable>),
}

/// The brokers did not answer, and what the client last saw of them: a refused connection, TLS handshake or login.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Kafka at {brokers}: {source}{}", cause.as_ref().map(|c| format!(" (the client's last error: {c})")).unwrap_or_default())]
pub struct Unreachable {
    pub brokers: String,
    pub source: KafkaError,
    pub cause: Option<String>,
}

fn unreachable(brokers: &str, source: KafkaError, cause: Option<String>) -> TopicError {
    TopicError::Unreachable(Box::new(Unreachable { brokers: brokers.to_owned(), source, cause }))
}

/// An admin client's context that keeps librdkafka's last error. A metadata request that fails says no more than
/// "broker transport failure"; librdkafka knew why — a TLS handshake the broker refused, a certificate the client
/// did not trust, a SASL password the broker refused — and said so to the context. The error a role stops with
/// carries it.
#[derive(Default)]
pub struct LastError(Mutex<Option<String>>);

impl LastError {
    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl LastError {
    fn keep(&self, what: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
    }
}

impl rdkafka::producer::ProducerContext for LastError {
    type DeliveryOpaque = ();
    // It sends nothing: it only asks for metadata.
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

impl ClientContext for LastError {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka client error");
        self.keep(reason.to_owned());
    }

    /// librdkafka logs a refused handshake or login from its own threads (`FAIL`), whether or not anyone polls for
    /// the error event.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::{Alert, Critical, Emerg, Error};
        if matches!(level, Emerg | Alert | Critical | Error) {
            tracing::debug!(fac, message, "librdkafka");
            self.keep(message.to_owned());
        } else {
            tracing::trace!(fac, message, "librdkafka");
        }
    }
}

/// Makes sure each topic exists with `config.partitions` partitions, creating missing ones when allowed.
/// `extra_config` holds topic settings for topics created here (e.g. `cleanup.policy=compact`), over
/// `config.topic_config`.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[(&str, &[(&str, &str)])],
    timeout: Duration,
) -> Result<(), TopicError> {
    let unreachable = |source| unreachable(&config.brokers, source, None);
    let admin: AdminClient<DefaultClientContext> =
        client_config(config).and_then(|client| client.create()).map_err(unreachable)?;
    // Metadata through a client whose main queue is polled, so its context hears librdkafka's log and errors;
    // at any process log level, so that a refused handshake is among them.
    let metadata: Arc<BaseProducer<LastError>> = Arc::new(
        client_config(config)
            .and_then(|mut client| {
                client.set_log_level(RDKafkaLogLevel::Warning).create_with_context(LastError::default())
            })
            .map_err(unreachable)?,
    );

    for (topic, extra) in topics {
        match partition_count(&metadata, topic, timeout, &config.brokers).await? {
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
        for (key, value) in &config.topic_config {
            if !extra.iter().any(|(own, _)| own == key) {
                new_topic = new_topic.set(key, value);
            }
        }
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
            match partition_count(&metadata, topic, timeout, &config.brokers).await? {
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
    client: &Arc<BaseProducer<LastError>>,
    topic: &str,
    timeout: Duration,
    brokers: &str,
) -> Result<Option<usize>, TopicError> {
    // Metadata for all topics rather than for `topic`: asking for one topic by name can auto-create it on brokers
    // with `auto.create.topics.enable`, with the broker's default partition count.
    let fetch = Arc::clone(client);
    let metadata = tokio::task::spawn_blocking(move || {
        let metadata = fetch.client().fetch_metadata(None, timeout);
        if metadata.is_err() {
            // What librdkafka logged meanwhile reaches the context only when its queue is served.
            fetch.poll(Duration::ZERO);
        }
        metadata
    })
    .await
    .map_err(|_| unreachable(brokers, KafkaError::Canceled, None))?
    .map_err(|source| unreachable(brokers, source, client.context().take()))?;
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

/// `config` with `producer.max_message_bytes` lowered to the smallest `max.message.bytes` among `topics` (each
/// topic's own setting or the brokers' default, as DescribeConfigs reports it), so that a role writing them never
/// builds a record — or a batch of records, which is what the broker measures — that a topic refuses as too large.
/// When the brokers cannot say (no `DescribeConfigs` permission, a broker without it), the configured bound stands
/// and a warning says so.
pub async fn fit_to_topics(config: &KafkaConfig, topics: &[&str], timeout: Duration) -> KafkaConfig {
    let configured = config.producer.max_message_bytes.get();
    let mut fitted = config.clone();
    let limits = match topic_record_limits(config, topics, timeout).await {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, topics = ?topics,
                "cannot read the topics' max.message.bytes; records are bounded by kafka.producer.max_message_bytes alone");
            return fitted;
        }
    };
    if let Some((topic, limit)) = limits.into_iter().filter(|(_, limit)| *limit < configured).min_by_key(|(_, l)| *l) {
        tracing::warn!(
            topic,
            max_message_bytes = limit,
            configured,
            "the topic takes smaller records than kafka.producer.max_message_bytes; records are kept under its limit"
        );
        fitted.producer.max_message_bytes = tailgate_config::ByteSize::b(limit);
    }
    fitted
}

/// Each of `topics` with its effective `max.message.bytes`.
async fn topic_record_limits(
    config: &KafkaConfig,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, u64)>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(config)?.create()?;
    let resources: Vec<ResourceSpecifier> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let results = admin.describe_configs(resources.iter(), &AdminOptions::new().request_timeout(Some(timeout))).await?;
    let mut limits = Vec::new();
    for (topic, result) in topics.iter().zip(results) {
        let resource = result.map_err(KafkaError::AdminOp)?;
        let limit = resource.get("max.message.bytes").and_then(|e| e.value.as_deref()).and_then(|v| v.parse().ok());
        if let Some(limit) = limit {
            limits.push(((*topic).to_owned(), limit));
        }
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error a role stops with says what librdkafka saw, not only "broker transport failure".
    #[tokio::test]
    async fn an_unreachable_broker_is_reported_with_what_the_client_saw() {
        let config = KafkaConfig { brokers: "127.0.0.1:1".into(), ..KafkaConfig::default() };
        let error = ensure_topics(&config, &[("x", &[])], Duration::from_secs(2)).await.unwrap_err().to_string();
        assert!(error.contains("the client's last error") && error.contains("Connection refused"), "{error}");
    }
}

//! The decisions topic as an earlier version made it, as Apache Kafka keeps it: version-1 records, one per trace,
//! compacted (a trace's older decision removed, leaving gaps in the offsets) and expired (its oldest segments
//! deleted, the low watermark moving). After an upgrade a worker must still load them; Tansu neither compacts nor
//! expires, so only here can a worker be seen loading decisions from a topic whose offsets are not contiguous.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tailgate_proto::decisions::Decision;
use tailgate_proto::partition_for_key;
use tailgate_sampler::SamplerConfig;

use crate::harness::otlp::{now_ns, trace_id};
use crate::harness::{self, eventually, topic};

const PARTITIONS: u32 = 2;
/// Traces whose decisions expire before the worker starts.
const EXPIRED: std::ops::Range<u64> = 0..100;
/// Traces first recorded as dropped, then as kept: compaction leaves the second.
const REDECIDED: std::ops::Range<u64> = 100..200;

async fn write(producer: &FutureProducer, topic: &str, traces: std::ops::Range<u64>, keep: bool) {
    let value = Decision { keep, policy: if keep { "errors-always".into() } else { String::new() } }.encode_v1();
    for t in traces {
        let key = trace_id(t);
        let partition = partition_for_key(&key, PARTITIONS) as i32;
        let record = FutureRecord::to(topic).key(&key).payload(&value).partition(partition);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("decision written");
    }
}

/// A record on each partition, a while after the last: the broker rolls the active segment, so the one before can
/// be compacted and deleted.
async fn roll(producer: &FutureProducer, topic: &str) {
    for p in 0..PARTITIONS as i32 {
        let record = FutureRecord::to(topic).key(b"roll".as_slice()).payload(b"".as_slice()).partition(p);
        producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("written");
    }
}

/// Low watermark of each partition, and every (partition, offset, key) readable now.
/// (partition, offset, key) of a record.
type Located = (i32, i64, Vec<u8>);

fn watermarks_and_records(brokers: &str, topic: &str) -> (Vec<i64>, Vec<Located>) {
    use rdkafka::message::Message as _;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("inspect-{topic}"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut lows = Vec::new();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        let (low, _) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap();
        lows.push(low);
        assignment.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let mut ended = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ended.len() < PARTITIONS as usize && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => records.push((m.partition(), m.offset(), m.key().unwrap_or_default().to_vec())),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            _ => {}
        }
    }
    (lows, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_loads_every_live_decision_from_a_compacted_and_expiring_topic() {
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, PARTITIONS);
    let topic = kafka.topics.decisions.clone();
    // The product's policy, with segments that roll and are cleaned within seconds.
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let new = NewTopic::new(&topic, PARTITIONS as i32, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact,delete")
        .set("retention.ms", "15000")
        .set("segment.ms", "500")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "0");
    for result in admin.create_topics([&new], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
    let producer = harness::kafka::producer(&brokers);

    // Old decisions; once they are older than the retention, a record on each partition rolls their segment, which
    // the cleaner then deletes. Nothing more is written meanwhile: a log always being cleaned is not deleted from.
    write(&producer, &topic, EXPIRED, true).await;
    let expired_keys: HashSet<Vec<u8>> = EXPIRED.map(trace_id).collect();
    tokio::time::sleep(Duration::from_secs(16)).await;
    roll(&producer, &topic).await;
    let started = Instant::now();
    loop {
        let (lows, records) = tokio::task::block_in_place(|| watermarks_and_records(&brokers, &topic));
        if lows.iter().all(|l| *l > 0) && !records.iter().any(|(_, _, k)| expired_keys.contains(k)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "the decisions never expired: low watermarks {lows:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "decisions topic: the expired decisions were deleted {:.1}s after their segment rolled",
        started.elapsed().as_secs_f64()
    );

    // From here on nothing may expire before the worker has loaded it: a long retention, the rest as it was
    // (AlterConfigs replaces a topic's whole configuration).
    let keep_longer = rdkafka::admin::AlterConfig::new(rdkafka::admin::ResourceSpecifier::Topic(&topic))
        .set("cleanup.policy", "compact,delete")
        .set("retention.ms", "3600000")
        .set("segment.ms", "500")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("delete.retention.ms", "0");
    for result in admin.alter_configs([&keep_longer], &AdminOptions::new()).await.unwrap() {
        result.expect("retention raised");
    }

    // Each redecided trace: first dropped, then kept; a roll, and compaction removes the first.
    write(&producer, &topic, REDECIDED, false).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    write(&producer, &topic, REDECIDED, true).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    roll(&producer, &topic).await;
    let redecided: HashSet<Vec<u8>> = REDECIDED.map(trace_id).collect();
    let started = Instant::now();
    let gaps = loop {
        let (_, records) = tokio::task::block_in_place(|| watermarks_and_records(&brokers, &topic));
        let copies = records.iter().filter(|(_, _, k)| redecided.contains(k)).count();
        if copies == redecided.len() {
            // Offsets with no record between the first and last readable ones: what compaction left.
            let gaps: i64 = (0..PARTITIONS as i32)
                .map(|p| {
                    let offsets: Vec<i64> = records.iter().filter(|r| r.0 == p).map(|r| r.1).collect();
                    offsets.windows(2).map(|w| w[1] - w[0] - 1).sum::<i64>()
                })
                .sum();
            break gaps;
        }
        assert!(started.elapsed() < Duration::from_secs(90), "never compacted: {copies} decisions of 100 traces");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "decisions topic compacted {:.1}s after the roll: {gaps} offsets without a record",
        started.elapsed().as_secs_f64()
    );
    assert!(gaps >= REDECIDED.count() as i64, "compaction left gaps where the dropped decisions were");

    // A worker assigned the partitions now loads the live decisions; late spans that fail nothing and that the
    // probabilistic policy would mostly drop follow them: every redecided trace's late span is kept.
    let config = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let owned = eventually(Duration::from_secs(30), || {
        sampler.stats.owned_partitions.load(Ordering::SeqCst) == u64::from(PARTITIONS)
    })
    .await;
    assert!(owned, "the worker was assigned its partitions (after loading their decisions)");
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let now = now_ns();
    let late = REDECIDED
        .map(|t| Span {
            trace_id: trace_id(t),
            span_id: (t + 1).to_be_bytes().to_vec(),
            name: "late".into(),
            start_time_unix_nano: now,
            end_time_unix_nano: now + 1_000,
            ..Default::default()
        })
        .collect();
    client.export(harness::trace_request(late)).await.unwrap();

    let records = tokio::task::spawn_blocking({
        let kafka = kafka.clone();
        let redecided = redecided.clone();
        move || {
            harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(30), |r| {
                topic::spans(r).iter().filter(|(_, s)| redecided.contains(&s.trace_id)).count() == redecided.len()
            })
        }
    })
    .await
    .unwrap();
    let kept: HashSet<Vec<u8>> =
        topic::spans(&records).into_iter().map(|(_, s)| s.trace_id).filter(|t| redecided.contains(t)).collect();
    assert_eq!(kept.len(), redecided.len(), "late spans of traces whose live decision is 'keep' were kept");
    gateway.stop().await;
    sampler.stop().await;
}

/// A worker loads at most what its decision cache holds — the newest — not every decision of the look-back into
/// memory to evict them again at once. 5,000 decisions, a cache of 1,024 (64 KiB, the least allowed): exactly
/// 1,024 loaded (before: 5,000,
/// held in one Vec however large the look-back, under the cache's lock while inserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_loads_no_more_decisions_than_its_cache_holds() {
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, PARTITIONS);
    tailgate_kafka::ensure_topics(&kafka, &[(&kafka.topics.decisions, &[])], Duration::from_secs(10)).await.unwrap();
    let producer = harness::kafka::producer(&brokers);
    write(&producer, &kafka.topics.decisions, 10_000..15_000, false).await;

    let config =
        SamplerConfig { decision_cache_bytes: tailgate_config::ByteSize::b(1_024 * 64), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let loaded = || sampler.stats.decisions_loaded.load(Ordering::SeqCst);
    let owned = || sampler.stats.owned_partitions.load(Ordering::SeqCst);
    assert!(eventually(Duration::from_secs(60), || owned() == u64::from(PARTITIONS)).await, "never assigned");
    assert_eq!(loaded(), 1_024, "decisions loaded, of 5,000 in the look-back, for a cache of 1,024");
    sampler.stop().await;
}

//! `tailgate resample` end to end, as a process against Apache Kafka: a window the live sampler thinned is re-decided and
//! every trace of it that the sampler did not keep arrives at Jaeger (or, with `--to-sampled-topic`, in the sampled
//! topic) whole and once; traces that began before or after the window do not, nor do the ones the sampler kept
//! (they were delivered already).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span, Status};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tailgate_sampler::SamplerConfig;
use tonic::transport::Channel;

use crate::harness::backends::TraceReceiver;
use crate::harness::otlp::{now_ms, rfc3339, service_resource, trace_id, trace_request_with};
use crate::harness::{self, binary, topic};

/// Window traces: 40, numbered from 100; every fifth has an error in a child span that arrives after its root;
/// every third calls inventory.
const WINDOW: std::ops::Range<u64> = 100..140;

fn span(trace: u64, n: u64, parent: Option<u64>, error: bool) -> Span {
    let now = harness::otlp::now_ns();
    Span {
        trace_id: trace_id(trace),
        span_id: (trace * 10 + n + 1).to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| (trace * 10 + p + 1).to_be_bytes().to_vec()).unwrap_or_default(),
        name: format!("t{trace}-s{n}"),
        kind: if parent.is_some() { span::SpanKind::Server } else { span::SpanKind::Client } as i32,
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        status: error.then(|| Status { code: status::StatusCode::Error as i32, message: "out of stock".into() }),
        ..Default::default()
    }
}

/// The root spans of `traces`, from the gateway.
async fn roots(client: &mut TraceServiceClient<Channel>, traces: impl Iterator<Item = u64>) {
    let spans = traces.map(|t| span(t, 0, None, false)).collect();
    client.export(trace_request_with(service_resource("gateway"), spans)).await.unwrap();
}

/// Two children of each of `traces`: one from cart (or inventory, every third trace), one from payments (an
/// error every fifth trace).
async fn children(client: &mut TraceServiceClient<Channel>, traces: impl Iterator<Item = u64> + Clone) {
    for (service, n) in [("cart", 1), ("inventory", 1), ("payments", 2)] {
        let spans: Vec<Span> = traces
            .clone()
            .filter(|t| n == 2 || (service == "inventory") == (t % 3 == 0))
            .map(|t| span(t, n, Some(0), n == 2 && t % 5 == 0))
            .collect();
        client.export(trace_request_with(service_resource(service), spans)).await.unwrap();
    }
}

/// Runs `tailgate resample` with `args`; its exit code and stderr.
async fn resample(config: String, args: Vec<String>) -> (Option<i32>, String) {
    let path = harness::temp_dir("resample").join("tailgate.yaml");
    std::fs::write(&path, config).unwrap();
    let output = tokio::task::spawn_blocking(move || {
        binary::tailgate().args(["resample", "--config"]).arg(&path).args(args).output().unwrap()
    })
    .await
    .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// The number of the trace sent with ID `id`.
fn trace_number(id: &[u8]) -> u64 {
    WINDOW.clone().chain(0..100).chain(200..300).find(|n| trace_id(*n) == id).expect("a trace sent")
}

/// Span IDs the receiver got, by trace number.
fn received(jaeger: &TraceReceiver) -> BTreeMap<u64, Vec<Vec<u8>>> {
    let mut by_trace: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (trace, span) in &jaeger.traces.lock().unwrap().spans {
        by_trace.entry(trace_number(trace)).or_default().push(span.clone());
    }
    by_trace
}

/// A window the live sampler thinned, on topics of its own, with the gateway and the sampler still running.
struct Thinned {
    kafka: tailgate_kafka::KafkaConfig,
    gateway: harness::RunningGateway,
    sampler: harness::roles::RunningSampler,
    /// The window, record time (ms).
    from: i64,
    to: i64,
    /// What the live sampler decided: every trace once.
    decisions: Vec<topic::Decided>,
    /// The window's traces the live sampler did not keep: what a resample keeping everything must deliver.
    expected: BTreeSet<u64>,
}

/// Sends traces before the window, straddling its start, in it and after it, and waits for the live sampler's
/// decisions (the seed's policies: errors, slow traces, 10% of the rest).
async fn thinned_window() -> Thinned {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let live = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..Default::default() };
    let sampler = harness::start_sampler(&live, &kafka, "sampler").await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();

    // Record time is the subject here: traces before the window, one straddling its start, the window's, and
    // after it. The window is [from, to]; a resample reads from `from - decision_wait` to `to + decision_wait`.
    let t0 = Instant::now();
    let at = |ms: u64| tokio::time::sleep_until((t0 + Duration::from_millis(ms)).into());
    roots(&mut client, 0..10).await;
    children(&mut client, 0..10).await;
    at(2_500).await;
    roots(&mut client, 10..20).await; // straddling: begun 0.5 s before the window
    let from = now_ms() + 500;
    at(3_300).await;
    children(&mut client, 10..20).await;
    at(3_500).await;
    roots(&mut client, WINDOW).await;
    at(3_800).await;
    children(&mut client, WINDOW).await; // the error spans arrive after their roots
    let to = now_ms() + 200;
    at(6_500).await;
    roots(&mut client, 200..210).await;
    children(&mut client, 200..210).await;

    // What the live sampler decided, from the decisions topic: every trace once.
    let decisions = harness::read_topic(&kafka.brokers, &kafka.topics.decisions, 4, Duration::from_secs(30), |r| {
        topic::decisions(r).len() >= 70
    });
    let decisions = topic::decisions(&decisions);
    let kept_live: BTreeSet<u64> = decisions
        .iter()
        .filter(|d| d.keep)
        .filter_map(|d| WINDOW.clone().find(|n| trace_id(*n) == d.trace_id))
        .collect();
    let errors: BTreeSet<u64> = WINDOW.filter(|t| t % 5 == 0).collect();
    assert!(kept_live.is_superset(&errors), "the live sampler keeps every error trace: {kept_live:?}");
    let expected: BTreeSet<u64> = WINDOW.filter(|t| !kept_live.contains(t)).collect();
    assert!(!expected.is_empty(), "the live sampler thinned the window: it kept {kept_live:?}");
    Thinned { kafka, gateway, sampler, from, to, decisions, expected }
}

/// The traces the live sampler kept whose spans a resample of the window reads, and so leaves out: the window's,
/// and the straddling traces' (10..20), whose spans all lie in the range read (`from - decision_wait` on). (On
/// Tansu, whose time lookup started later, the straddling traces were not read; Apache Kafka's lookup is exact.)
fn kept_read(decisions: &[topic::Decided]) -> usize {
    decisions.iter().filter(|d| d.keep).filter(|d| (10..20).chain(WINDOW).any(|n| trace_id(n) == d.trace_id)).count()
}

/// The resample's own topics of `kafka`'s sampled topic (`<sampled topic>.resample.<time>`) that exist.
fn resample_topics(kafka: &tailgate_kafka::KafkaConfig) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let prefix = format!("{}.resample.", kafka.topics.sampled_spans);
    metadata.topics().iter().map(|t| t.name().to_owned()).filter(|t| t.starts_with(&prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resample_delivers_every_trace_of_a_thinned_window_whole_and_once() {
    let Thinned { kafka, gateway, sampler, from, to, decisions, expected } = thinned_window().await;

    let config = |jaeger: &TraceReceiver| {
        format!(
            "{}sampler: {{ decision_wait: 1s }}\nexporters:\n  jaeger: {{ endpoint: '{}' }}\n",
            harness::kafka::kafka_yaml(&kafka),
            jaeger.endpoint()
        )
    };
    let jaeger = TraceReceiver::start().await;
    let (code, stderr) =
        resample(config(&jaeger), vec!["--from".into(), rfc3339(from), "--to".into(), rfc3339(to)]).await;
    assert_eq!(code, Some(0), "{stderr}");

    // Every trace of the window the sampler did not keep, whole (3 spans), none twice, nothing else.
    let received = received(&jaeger);
    assert_eq!(received.keys().copied().collect::<BTreeSet<u64>>(), expected, "{stderr}");
    for (trace, spans) in &received {
        let distinct: BTreeSet<&Vec<u8>> = spans.iter().collect();
        assert_eq!((spans.len(), distinct.len()), (3, 3), "trace {trace}: whole and once");
    }
    // Left out as kept already: every span read of a trace the live sampler kept.
    let (n, k) = (expected.len(), kept_read(&decisions));
    assert!(stderr.contains("resample: "), "a progress line: {stderr}");
    assert!(
        stderr.contains(&format!("{n} traces decided, {n} kept ({} spans)", 3 * n))
            && stderr.contains(&format!("{} spans of traces the sampler had kept left out", 3 * k)),
        "a summary with the exact counts: {stderr}"
    );
    assert!(stderr.contains(&format!("{} items delivered, 0 rejected", 3 * n)), "the delivery's summary: {stderr}");
    // The throw-away topic (and its dead-letter topic) went once delivered.
    let left = resample_topics(&kafka);
    assert!(left.is_empty(), "{left:?}");

    // The incident story: only the traces that touched inventory (every third), with a policies file.
    let jaeger = TraceReceiver::start().await;
    let policies = harness::temp_dir("resample-policies").join("inventory.yaml");
    std::fs::write(
        &policies,
        "policies:\n  - name: inventory\n    type: string_attribute\n    string_attribute: { key: service.name, values: [inventory] }\n",
    )
    .unwrap();
    let (code, stderr) = resample(
        config(&jaeger),
        vec![
            "--from".into(),
            rfc3339(from),
            "--to".into(),
            rfc3339(to),
            "--policies".into(),
            policies.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let inventory: BTreeSet<u64> = expected.iter().copied().filter(|t| t % 3 == 0).collect();
    assert_eq!(received_traces(&jaeger), inventory, "{stderr}");

    sampler.stop().await;
    gateway.stop().await;
}

fn received_traces(jaeger: &TraceReceiver) -> BTreeSet<u64> {
    received(jaeger).keys().copied().collect()
}

/// The spans of `after` that are not in `before`, by trace number, counted as a multiset (a span twice in `after`
/// and once in `before` is added once): what was written to a topic between two reads of it.
fn spans_added(before: &[harness::Record], after: &[harness::Record]) -> BTreeMap<u64, Vec<Vec<u8>>> {
    let mut seen: BTreeMap<(Vec<u8>, Vec<u8>), usize> = BTreeMap::new();
    for (_, span) in topic::spans(before) {
        *seen.entry((span.trace_id, span.span_id)).or_default() += 1;
    }
    let mut added: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    for (_, span) in topic::spans(after) {
        let key = (span.trace_id, span.span_id);
        match seen.get_mut(&key) {
            Some(count) if *count > 0 => *count -= 1,
            _ => added.entry(trace_number(&key.0)).or_default().push(key.1),
        }
    }
    added
}

/// What `group` has committed on each partition of `kafka`'s spans topic; `Offset::Invalid` where nothing.
fn committed(kafka: &tailgate_kafka::KafkaConfig, group: &str) -> Vec<Offset> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topic = &kafka.topics.spans;
    let mut list = TopicPartitionList::new();
    for p in 0..kafka.partitions as i32 {
        list.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(list, Duration::from_secs(10)).unwrap();
    (0..kafka.partitions as i32).map(|p| committed.find_partition(topic, p).expect("asked for").offset()).collect()
}

/// The consumer groups of the cluster whose names start with `prefix`.
fn groups(kafka: &tailgate_kafka::KafkaConfig, prefix: &str) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    let list = consumer.fetch_group_list(None, Duration::from_secs(10)).unwrap();
    list.groups().iter().map(|g| g.name().to_owned()).filter(|name| name.starts_with(prefix)).collect()
}

/// `--to-sampled-topic`: the window's traces go to the sampled topic instead, for the running exporters to deliver
/// — each trace the live sampler did not keep, whole and once, and none it kept — with no delivery stage, no
/// throw-away topic, no decision recorded and nothing committed (README, *Resample*).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resample_to_the_sampled_topic_writes_every_trace_of_a_thinned_window_there_whole_and_once() {
    let Thinned { kafka, gateway, sampler, from, to, decisions, expected } = thinned_window().await;
    // The live sampler writes to the same topics: it stops first (committing what it settled), so that what the
    // sampled and decisions topics gain from here on is the resample's alone, and its group's offsets stand still.
    sampler.stop().await;
    let live_group = format!("{}-sampler", kafka.consumer.group_prefix);
    let live_committed = committed(&kafka, &live_group);
    let read_all = |topic: &str| harness::read_topic(&kafka.brokers, topic, 4, Duration::from_secs(30), |_| true);
    let sampled_before = read_all(&kafka.topics.sampled_spans);
    let decisions_before = read_all(&kafka.topics.decisions);

    // No exporters configured: none is needed to write to the sampled topic.
    let config = format!("{}sampler: {{ decision_wait: 1s }}\n", harness::kafka::kafka_yaml(&kafka));
    let args = vec!["--from".into(), rfc3339(from), "--to".into(), rfc3339(to), "--to-sampled-topic".into()];
    let (code, stderr) = resample(config, args).await;
    assert_eq!(code, Some(0), "{stderr}");

    // A resample that exits 0 had all its output acknowledged: the topic's end now is past all of it.
    let added = spans_added(&sampled_before, &read_all(&kafka.topics.sampled_spans));
    assert_eq!(added.keys().copied().collect::<BTreeSet<u64>>(), expected, "{stderr}");
    for (trace, spans) in &added {
        let distinct: BTreeSet<&Vec<u8>> = spans.iter().collect();
        assert_eq!((spans.len(), distinct.len()), (3, 3), "trace {trace}: whole and once");
    }
    let (n, k) = (expected.len(), kept_read(&decisions));
    let summary = format!(
        "{n} traces decided, {n} kept ({} spans) written to {}; {} spans of traces the sampler had kept left out",
        3 * n,
        kafka.topics.sampled_spans,
        3 * k
    );
    assert!(stderr.contains(&summary), "a summary naming the sampled topic, with the exact counts: {stderr}");
    // The running exporters deliver: no replay of its own, and no topic of its own to replay from.
    assert!(!stderr.contains("replay jaeger"), "{stderr}");
    let made = resample_topics(&kafka);
    assert!(made.is_empty(), "{made:?}");

    // No decision recorded: the live sampler's stand.
    let decisions_after = read_all(&kafka.topics.decisions);
    assert_eq!(decisions_after.len(), decisions_before.len(), "decision records: the resample records none");
    // Nothing committed: the live group's offsets are as the live sampler left them, and the resample's own group
    // (`tailgate-resample-<time>`), which would be listed had it committed, holds nothing on this spans topic.
    assert_eq!(committed(&kafka, &live_group), live_committed, "the live sampler's offsets");
    for group in groups(&kafka, "tailgate-resample-") {
        let nothing = vec![Offset::Invalid; kafka.partitions as usize];
        assert_eq!(committed(&kafka, &group), nothing, "offsets of group {group}");
    }

    gateway.stop().await;
}

//! Consumer-group membership on Apache Kafka: static members (KIP-345) get their partitions back at once after a
//! crash, and `cooperative-sticky` (KIP-429), the default, moves partitions between samplers while traces are
//! mid-window without losing a span or giving a partition to two workers at once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tailgate_sampler::SamplerConfig;

use super::{expected, send_traces, spans_in};
use crate::harness::backends::TraceReceiver;
use crate::harness::kafka::kafka_yaml;
use crate::harness::processes::{local_addr, Process, Ready};
use crate::harness::{self, eventually};

/// The distinct spans `jaeger` holds.
fn distinct(jaeger: &TraceReceiver) -> HashSet<super::SpanKey> {
    jaeger.traces.lock().unwrap().spans.iter().cloned().collect()
}

/// A sampler and a Jaeger exporter, each its own process with a `group_instance_id`, SIGKILLed together and
/// restarted under the same names. librdkafka's default session (45 s) is left as it is: without static
/// membership the restarted workers would wait for the dead members' sessions to expire before consuming (47 s
/// was measured that way on Tansu). With it, the broker hands the new process its predecessor's partitions at
/// its first join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_members_killed_and_restarted_consume_again_at_once() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 4);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let jaeger = TraceReceiver::start().await;
    let dir = harness::temp_dir("static-membership");
    let role = |name: &str, section: String| {
        let telemetry: SocketAddr = local_addr();
        let mut kafka = kafka.clone();
        kafka.consumer.group_instance_id = Some(format!("{name}-0"));
        let config =
            format!("{}telemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\n{section}", kafka_yaml(&kafka));
        Process::new(
            &dir,
            name,
            if name == "sampler" { "sampler" } else { "exporter" },
            &config,
            Ready::Health(telemetry),
        )
    };
    let mut sampler = role("sampler", "sampler: { decision_wait: 1s }\n".to_owned());
    let mut exporter = role(
        "exporter",
        format!(
            "exporters: {{ jaeger: {{ endpoint: '{}', retry_on_failure: {{ initial_interval: 100ms, max_interval: 1s }} }} }}\n",
            jaeger.endpoint()
        ),
    );
    sampler.start().await;
    exporter.start().await;

    send_traces(&mut client, 0..20).await;
    let first = expected(0..20);
    assert!(
        eventually(Duration::from_secs(60), || distinct(&jaeger).is_superset(&first)).await,
        "the first traces never reached Jaeger ({} of {} spans); see {}",
        distinct(&jaeger).intersection(&first).count(),
        first.len(),
        exporter.log().display()
    );

    sampler.kill();
    exporter.kill();
    let restarted = Instant::now();
    sampler.start().await;
    exporter.start().await;
    send_traces(&mut client, 20..40).await;
    let second = expected(20..40);
    let back = eventually(Duration::from_secs(40), || distinct(&jaeger).is_superset(&second)).await;
    let took = restarted.elapsed();
    assert!(
        back,
        "after SIGKILL and a restart under the same group_instance_id, {} of {} spans reached Jaeger in {took:?}: \
         the partitions were not handed back (logs: {}, {})",
        distinct(&jaeger).intersection(&second).count(),
        second.len(),
        sampler.log().display(),
        exporter.log().display()
    );
    eprintln!(
        "static membership (Apache Kafka, 45 s session): sampler and exporter SIGKILLed, restarted, and traces sent \
         after the restart in Jaeger {:.1}s later (process start and decision_wait 1s included)",
        took.as_secs_f64()
    );
    // Well inside the 45 s session a dynamic member would have waited out.
    assert!(took < Duration::from_secs(15), "static membership took {took:?}");

    sampler.stop();
    exporter.stop();
    gateway.stop().await;
}

/// Three samplers under the default `cooperative-sticky`: a third joins and then one leaves while every trace's
/// failed child is still to come. No trace loses a span, and the partitions the running workers own never add up
/// to more than there are (checked every few milliseconds throughout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalances_mid_window_lose_nothing_and_never_share_a_partition() {
    const PARTITIONS: u32 = 6;
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    assert_eq!(kafka.consumer.assignment_strategy, None, "the product's default is what this test is about");
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    // Long enough for two rebalances to happen between a trace's root and its failed child.
    let decision_wait = Duration::from_secs(15);
    let config = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(15), ..SamplerConfig::default() };

    let owned: Arc<std::sync::Mutex<Vec<Arc<tailgate_sampler::SamplerStats>>>> = Default::default();
    let most = Arc::new(AtomicU64::new(0));
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = std::thread::spawn({
        let (owned, most, watching) = (Arc::clone(&owned), Arc::clone(&most), Arc::clone(&watching));
        move || {
            while watching.load(Ordering::SeqCst) {
                let sum: u64 = owned.lock().unwrap().iter().map(|s| s.owned_partitions.load(Ordering::SeqCst)).sum();
                most.fetch_max(sum, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    });

    let a = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let b = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    owned.lock().unwrap().extend([Arc::clone(&a.stats), Arc::clone(&b.stats)]);
    let all_owned = |stats: &[&Arc<tailgate_sampler::SamplerStats>]| {
        stats.iter().map(|s| s.owned_partitions.load(Ordering::SeqCst)).sum::<u64>() == u64::from(PARTITIONS)
    };
    assert!(eventually(Duration::from_secs(30), || all_owned(&[&a.stats, &b.stats])).await, "two members assigned");

    // Roots now; the failed children after C joined, then after A left.
    let roots = Instant::now();
    super::send_roots(&mut client, 0..150).await;
    let c = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    owned.lock().unwrap().push(Arc::clone(&c.stats));
    assert!(
        eventually(Duration::from_secs(30), || c.stats.owned_partitions.load(Ordering::SeqCst) > 0).await,
        "the third sampler was never given a partition"
    );
    super::send_children(&mut client, 0..75).await;
    let a_stats = Arc::clone(&a.stats);
    a.stop().await;
    let revoked_from_a = a_stats.revocations.load(Ordering::SeqCst);
    owned.lock().unwrap().retain(|s| !Arc::ptr_eq(s, &a_stats));
    super::send_children(&mut client, 75..150).await;
    let mid_window = roots.elapsed();
    assert!(
        mid_window < decision_wait,
        "the rebalances took {mid_window:?}: the children did not arrive within the window, so the test shows nothing"
    );
    send_traces(&mut client, 150..200).await;

    let want = expected(0..200);
    let found = {
        let (kafka, want) = (kafka.clone(), want.clone());
        tokio::task::spawn_blocking(move || {
            spans_in(&kafka, &kafka.topics.sampled_spans, &want, Duration::from_secs(90))
        })
        .await
        .unwrap()
    };
    watching.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    let lost = want.difference(&found.0).count();
    eprintln!(
        "cooperative-sticky on Apache Kafka: 3 samplers, one joined and one left mid-window; lost spans = {lost}, \
         copies = {} for {} spans, most partitions owned at once = {} of {PARTITIONS}, revocations of the leaver \
         in all = {revoked_from_a}; both rebalances within {:.1}s of the roots",
        found.1,
        want.len(),
        most.load(Ordering::SeqCst),
        mid_window.as_secs_f64()
    );
    assert_eq!(lost, 0, "spans lost through cooperative rebalances");
    assert!(most.load(Ordering::SeqCst) <= u64::from(PARTITIONS), "a partition was owned by two workers at once");

    b.stop().await;
    c.stop().await;
    gateway.stop().await;
}

/// Two samplers started with the same `group_instance_id` (a copied StatefulSet name, a config shared by
/// mistake): the broker fences the first. It must stop, non-zero, saying why — not idle with `/ready` true as it
/// did, holding nothing while its orchestrator thinks it healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_static_member_stops_and_says_why() {
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    kafka.consumer.group_instance_id = Some("sampler-twin".to_owned());
    let dir = harness::temp_dir("fenced");
    let start = |name: &str| {
        let telemetry = local_addr();
        let config = format!(
            "{}telemetry: {{ metrics: {{ endpoint: '{telemetry}' }} }}\nsampler: {{ decision_wait: 1s }}\n",
            kafka_yaml(&kafka)
        );
        Process::new(&dir, name, "sampler", &config, Ready::Health(telemetry))
    };
    let (mut first, mut second) = (start("first"), start("second"));
    first.start().await;
    let owns =
        |process: &Process| std::fs::read_to_string(process.log()).is_ok_and(|log| log.contains("partitions assigned"));
    assert!(eventually(Duration::from_secs(30), || owns(&first)).await, "the first sampler was assigned");
    second.start().await;
    let exited = eventually(Duration::from_secs(60), || first.exited().is_some()).await;
    let log = std::fs::read_to_string(first.log()).unwrap();
    assert!(exited, "the fenced sampler kept running: {log}");
    let status = first.exited().unwrap();
    assert!(!status.success(), "the fenced sampler exited 0");
    assert!(log.contains("group_instance_id"), "its error says what to check: {log}");
    second.stop();
}

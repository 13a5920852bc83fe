//! Nothing acknowledged is lost when Apache Kafka itself fails: a broker SIGKILLed and restarted on its own log
//! directories under the whole running pipeline; on a three-node cluster (`replication.factor=3`,
//! `min.insync.replicas=2`) the spans partition's leader killed under load, a controlled leader change, and two
//! of three brokers down, when the gateway must stop acknowledging. The idempotent producer (the default, on
//! here) writes no span twice into the raw topic through all of it.

use std::time::{Duration, Instant};

use tailgate_sampler::SamplerConfig;

use super::{all_copies, Ledger, Load};
use crate::harness::apache_kafka::{Cluster, Options};
use crate::harness::backends::TraceReceiver;
use crate::harness::{self, eventually};

const PARTITIONS: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_on_its_own_log_directories_loses_nothing_acknowledged() {
    let cluster = Cluster::start(Options::default());
    let kafka = harness::kafka_config(&cluster.bootstrap(), PARTITIONS);
    assert_eq!(kafka.producer.idempotence, None, "the production default: idempotent");
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let sampler = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&sampler, &kafka, "tailgate-sampler").await;
    let jaeger = TraceReceiver::start().await;
    let exporter = harness::roles::start_jaeger_exporter(jaeger.endpoint(), &kafka).await;

    let load = Load::start(gateway.grpc_url());
    assert!(load.progresses(50, Duration::from_secs(30)).await, "the pipeline acknowledges before the fault");
    let node = cluster.node(1);
    tokio::task::block_in_place(|| node.kill());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart = Instant::now();
    tokio::task::block_in_place(|| node.restart());
    assert!(load.progresses(50, Duration::from_secs(60)).await, "the gateway acknowledges again after the restart");
    eprintln!("broker restart: acknowledging again {:.1}s after the restart began", restart.elapsed().as_secs_f64());
    let sent = load.stop().await;

    // Raw topic: every acknowledged span, none twice.
    let raw = {
        let (kafka, want) = (kafka.clone(), sent.acknowledged.clone());
        tokio::task::spawn_blocking(move || all_copies(&kafka, &kafka.topics.spans, &want, Duration::from_secs(60)))
            .await
            .unwrap()
    };
    let raw = Ledger::of(&sent, &sent.acknowledged, &raw);
    // Jaeger: every span of every trace whose two requests were acknowledged (each has a failed span: kept).
    let whole = sent.of_complete_traces();
    eventually(Duration::from_secs(240), || {
        let got: std::collections::HashSet<_> = jaeger.traces.lock().unwrap().spans.iter().cloned().collect();
        whole.is_subset(&got)
    })
    .await;
    let delivered = jaeger.traces.lock().unwrap().spans.clone();
    let jaeger_ledger = Ledger::of(&sent, &whole, &delivered);
    let refused = sent.requests.iter().filter(|r| !r.2).count();
    eprintln!(
        "broker SIGKILL + restart under the pipeline ({} requests, {refused} refused during the outage):\n  spans \
         topic: {raw}\n  Jaeger: {jaeger_ledger}",
        sent.requests.len()
    );
    assert!(refused > 0, "the outage was felt: some request was refused while the broker was down");
    assert_eq!(raw.lost, 0, "acknowledged spans lost from the spans topic");
    assert_eq!(raw.unexpected, 0);
    assert_eq!(raw.duplicated, 0, "the idempotent producer wrote spans twice");
    assert_eq!(jaeger_ledger.lost, 0, "spans of acknowledged error traces never reached Jaeger");
    assert_eq!(jaeger_ledger.unexpected, 0);

    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_on_three_brokers_loses_nothing_and_needs_min_insync_replicas() {
    let cluster = tokio::task::block_in_place(|| {
        Cluster::start(Options { nodes: 3, ..Options::default() }.property("min.insync.replicas", 2))
    });
    let mut kafka = harness::kafka_config(&cluster.bootstrap(), PARTITIONS);
    kafka.replication_factor = 3;
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let load = Load::start(gateway.grpc_url());
    assert!(load.progresses(50, Duration::from_secs(30)).await, "the gateway acknowledges before the faults");

    // 1. The leader of spans partition 0 SIGKILLed under load, and back after a while.
    let leader =
        tokio::task::block_in_place(|| cluster.leader(&kafka.topics.spans, 0)).expect("partition 0 has a leader");
    cluster.node(leader).kill();
    let killed = Instant::now();
    assert!(
        load.progresses(50, Duration::from_secs(60)).await,
        "the gateway did not acknowledge again after the leader died"
    );
    eprintln!("leader {leader} killed: acknowledging again within {:.1}s", killed.elapsed().as_secs_f64());
    let moved = tokio::task::block_in_place(|| cluster.leader(&kafka.topics.spans, 0));
    assert!(moved.is_some_and(|l| l != leader), "partition 0 has a new leader: {moved:?}");
    tokio::task::block_in_place(|| cluster.node(leader).restart());

    // 2. A controlled leader change: the preferred replicas lead again.
    let bootstrap = cluster.bootstrap();
    tokio::task::block_in_place(|| {
        cluster.tool(
            "org.apache.kafka.tools.LeaderElectionCommand",
            &["--bootstrap-server", &bootstrap, "--election-type", "PREFERRED", "--all-topic-partitions"],
        )
    });
    assert!(load.progresses(50, Duration::from_secs(60)).await, "acknowledging after the leader change");

    // 3. Two of three brokers down: one in-sync replica is fewer than min.insync.replicas, so nothing more may be
    // acknowledged until one is back.
    let survivor = tokio::task::block_in_place(|| cluster.leader(&kafka.topics.spans, 0)).expect("a leader");
    let down: Vec<u32> = cluster.nodes().iter().map(|n| n.id).filter(|id| *id != survivor).collect();
    for id in &down {
        cluster.node(*id).kill();
    }
    let both_down = Instant::now();
    // Long enough that requests begin well inside the window below, however long each waits on the 5 s delivery
    // timeout under a loaded machine (12 s left none in it once).
    tokio::time::sleep(Duration::from_secs(20)).await;
    let back = Instant::now();
    for id in &down {
        let node = cluster.node(*id);
        tokio::task::block_in_place(|| node.restart());
    }
    assert!(load.progresses(50, Duration::from_secs(90)).await, "acknowledging again with the brokers back");
    let sent = load.stop().await;

    // Requests sent while two brokers had been down for longer than the producer's delivery timeout (5 s) plus a
    // margin, and answered before one came back: none of them may have been acknowledged.
    let window = (both_down + Duration::from_secs(7), back);
    let in_window: Vec<_> =
        sent.requests.iter().filter(|(began, _, _)| *began >= window.0 && *began < window.1).collect();
    let acknowledged_in_window = in_window.iter().filter(|(_, answered, ok)| *ok && *answered < back).count();
    eprintln!(
        "two of three brokers down for 20 s: {} requests sent in the window, {acknowledged_in_window} acknowledged",
        in_window.len()
    );
    assert!(!in_window.is_empty(), "the load kept sending while two brokers were down");
    assert_eq!(acknowledged_in_window, 0, "acknowledged with fewer in-sync replicas than min.insync.replicas");

    let raw = {
        let (kafka, want) = (kafka.clone(), sent.acknowledged.clone());
        tokio::task::spawn_blocking(move || all_copies(&kafka, &kafka.topics.spans, &want, Duration::from_secs(90)))
            .await
            .unwrap()
    };
    let raw = Ledger::of(&sent, &sent.acknowledged, &raw);
    eprintln!(
        "three brokers, leader killed, leader moved, two down ({} requests): spans topic: {raw}",
        sent.requests.len()
    );
    assert_eq!(raw.lost, 0, "acknowledged spans lost");
    assert_eq!(raw.unexpected, 0);
    assert_eq!(raw.duplicated, 0, "the idempotent producer wrote spans twice");
    gateway.stop().await;
}

//! The whole pipeline the campaign runs: a broker cluster, two gateways, two samplers, one
//! exporter process delivering to Jaeger (the OTLP/gRPC receiver), Prometheus (the real one) and Loki (the push
//! receiver) — every role a process of the real binary, every backend one the test can tell to fail.
//!
//! The brokers are, by default, **Apache Kafka**: three KRaft nodes, every topic at replication factor 3 with
//! `min.insync.replicas=2`, the roles with the product's defaults (the idempotent producer, the cooperative-sticky
//! assignment) — the cluster the README tells production to run — each node behind a TCP proxy of the test's, through
//! which every role reaches it (so the network between them can fail), and a 10 s consumer session. `TAILGATE_CAMPAIGN_BROKER=tansu` runs on
//! `tailgate broker` (Tansu on a data directory, its own process), `=mock` on librdkafka's MockCluster. Neither
//! lasts every schedule; what each did, so that a failing run on them can be read:
//! * Tansu 0.6's idempotent-producer support panics its storage when a batch carries a producer epoch it did not
//!   record (a paused or reconnecting producer sends one), and then refuses every request: the roles run with
//!   `kafka.producer.idempotence: false` on it, as all-in-one does.
//! * On Tansu, a consumer group that lost a member to SIGKILL was once never assigned again (the exporter's `loki`
//!   group, 45 s session expired, lag stuck); after a broker restart on the same data directory, groups that had
//!   lost a member shortly before were never assigned again; 25 minutes into a 30-minute run it stopped answering
//!   (requests timed out, nothing logged).
//! * On MockCluster, a rebalance when the second sampler joined took 5 minutes (the rebalance timeout), and every
//!   group took 90 s to be assigned again after a 2 s broker outage.
//!
//! The memory limits configured here are what the RSS bound is derived from (see [`rss_bound_mib`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tailgate_kafka::KafkaConfig;

use crate::harness::apache_kafka::{Cluster, Options};
use crate::harness::backends::{LokiReceiver, Prometheus, TraceReceiver};
use crate::harness::kafka::{kafka_config, kafka_yaml};
use crate::harness::processes::{local_addr, Process, Ready};
use crate::harness::proxy::Proxy;
use crate::harness::temp_dir;

pub const PARTITIONS: u32 = 4;
/// The samplers' decision wait, in seconds.
pub const DECISION_WAIT_S: u64 = 10;
/// The consumers' `kafka.consumer.session_timeout`, in seconds, on Apache Kafka: shorter than the 45 s default, as
/// an operator who wants a dead worker's partitions moved sooner sets it, so that a blackhole outlasts it in a
/// short run.
pub const SESSION_S: u64 = 10;

/// `ingest.max_in_flight_bytes`, MiB.
const GATEWAY_IN_FLIGHT_MIB: u64 = 32;
/// `sampler.max_buffered_bytes` and `sampler.max_output_bytes_in_flight`, MiB.
const SAMPLER_BUFFER_MIB: u64 = 32;
const SAMPLER_OUTPUT_MIB: u64 = 8;
/// `batch.max_bytes` of each of the three exporters, MiB.
const EXPORTER_BATCH_MIB: u64 = 2;

/// What a process of this debug build takes besides the data it is configured to hold: the binary's touched pages,
/// the Tokio runtime, librdkafka's threads and its fetch and produce queues (bounded by the roles), allocator slack.
/// Peaks (`VmHWM`) measured in the 300 s run on Apache Kafka, every fault kind injected: exporter 44 MiB (6 MiB of
/// batches configured), gateways 38 MiB (32 MiB in flight allowed), samplers 41 MiB (40 MiB of buffer and output).
/// So 48 MiB: every process's bound is within 50 MiB of its measured peak (exporter 54, gateways 80, samplers 88),
/// where a 180 MiB allowance hid leaks of several times the configured sizes.
pub const OVERHEAD_MIB: u64 = 48;

pub struct Pipeline {
    pub dir: PathBuf,
    pub kafka: KafkaConfig,
    pub broker: Broker,
    pub gateways: Vec<Process>,
    /// The gateways' OTLP/gRPC addresses, fixed across restarts.
    pub gateway_addrs: Vec<SocketAddr>,
    pub samplers: Vec<Process>,
    pub exporter: Process,
    pub jaeger: TraceReceiver,
    pub loki: LokiReceiver,
    pub prometheus: Prometheus,
    /// The exporter's path to Prometheus, so that Prometheus can go on (scraping itself) while the exporter cannot
    /// reach it.
    pub prometheus_path: Proxy,
}

/// The gateways' `grpc.tenant_header`: a request names its tenant here (the client's name none: the default).
pub const TENANT_HEADER: &str = "x-scope-orgid";

/// A sampler's section: the seed's policies, the last one named `rest` (a reload renames it: the same decisions).
pub fn sampler_section(rest: &str) -> String {
    format!(
        "sampler:\n  decision_wait: {DECISION_WAIT_S}s\n  max_buffered_bytes: {SAMPLER_BUFFER_MIB}MiB\n  \
         max_trace_bytes: 1MiB\n  max_output_bytes_in_flight: {SAMPLER_OUTPUT_MIB}MiB\n  policies:\n    \
         - {{ name: errors-always, type: status_code, status_code: {{ status_codes: [ERROR] }} }}\n    \
         - {{ name: slow-requests, type: latency, latency: {{ threshold_ms: 2000 }} }}\n    \
         - {{ name: {rest}, type: probabilistic, probabilistic: {{ sampling_percentage: {} }} }}\n",
        super::expectation::PERCENTAGE
    )
}

impl Pipeline {
    /// Writes every config and starts the backends; the processes start with [`Pipeline::start`].
    pub async fn new() -> Pipeline {
        let dir = temp_dir("campaign");
        let choice = std::env::var("TAILGATE_CAMPAIGN_BROKER").unwrap_or_else(|_| "kafka".to_owned());
        let (broker, kafka) = match choice.as_str() {
            "kafka" => {
                let cluster = tokio::task::block_in_place(|| {
                    Cluster::start(
                        Options { nodes: 3, proxied: true, ..Options::default() }
                            .property("min.insync.replicas", 2)
                            // A node that stops answering loses its leaderships in 6 s, not Kafka's default 9 s:
                            // the campaign's pauses are seconds long.
                            .property("broker.session.timeout.ms", 6000)
                            .property("broker.heartbeat.interval.ms", 1000),
                    )
                });
                let mut kafka = kafka_config(&cluster.bootstrap(), PARTITIONS);
                kafka.replication_factor = 3;
                kafka.consumer.session_timeout = Some(tailgate_config::Duration::from_secs(SESSION_S));
                assert_eq!(kafka.producer.idempotence, None, "the product's default: idempotent");
                assert_eq!(kafka.consumer.assignment_strategy, None, "the product's default assignment");
                (Broker::Kafka(cluster), kafka)
            }
            "mock" => {
                let mock = MockCluster::new(1).expect("mock cluster starts");
                // The mock cannot create topics; the roles find them there.
                let kafka = crate::harness::mock_kafka(&mock, PARTITIONS);
                (Broker::Mock(mock), kafka)
            }
            "tansu" => {
                let broker_addr = local_addr();
                let mut kafka = kafka_config(&broker_addr.to_string(), PARTITIONS);
                // Tansu differs from Kafka here: its idempotent producer support panics the broker's storage when a
                // batch carries a producer epoch it did not record, which a SIGSTOPped or reconnecting producer
                // sends. Seen in a long run: broker dead 240 s in, lite.rs:503 "more or less than one row". So the
                // roles run with `kafka.producer.idempotence: false`, as all-in-one does for its embedded Tansu.
                kafka.producer.idempotence = Some(false);
                // And eager rebalancing: under the cooperative protocol Tansu has handed one partition to two
                // members.
                kafka.consumer.assignment_strategy = Some(tailgate_kafka::AssignmentStrategy::Range);
                let data = dir.join("data");
                let broker = Process::new(
                    &dir,
                    "broker",
                    "broker",
                    &format!("embedded_broker: {{ listen: '{broker_addr}', data_dir: '{}' }}\n", data.display()),
                    Ready::Listening(broker_addr),
                );
                (Broker::Tansu(broker), kafka)
            }
            other => panic!("TAILGATE_CAMPAIGN_BROKER `{other}`: one of kafka (the default), tansu, mock"),
        };
        let (jaeger, loki, prometheus) =
            (TraceReceiver::start().await, LokiReceiver::start().await, Prometheus::start_with_short_head().await);
        let prometheus_path = Proxy::start(prometheus.addr);
        // Dynamic members, the product's default. (As static members, named as a StatefulSet would, the exporter
        // was once fenced by its own rejoin after its session expired under the CI machine's load — librdkafka's
        // FencedInstanceId, fatal — and exited 1 for an orchestrator to restart; static membership's restart is
        // measured in tests/kafka/membership.rs.)
        let common = |telemetry: SocketAddr| {
            format!(
                "{}telemetry: {{ metrics: {{ endpoint: '{telemetry}' }}, logs: {{ level: info }} }}\nshutdown: {{ grace: 5s }}\n",
                kafka_yaml(&kafka)
            )
        };

        let mut gateways = Vec::new();
        let mut gateway_addrs = Vec::new();
        for n in 0..2 {
            let (grpc, http, telemetry) = (local_addr(), local_addr(), local_addr());
            let config = format!(
                "{}ingest: {{ grpc: {{ endpoint: '{grpc}', tenant_header: {TENANT_HEADER} }}, http: {{ endpoint: '{http}' }}, max_in_flight_bytes: {GATEWAY_IN_FLIGHT_MIB}MiB }}\n",
                common(telemetry)
            );
            gateways.push(Process::new(&dir, &format!("gateway-{n}"), "ingest", &config, Ready::Health(telemetry)));
            gateway_addrs.push(grpc);
        }

        let mut samplers = Vec::new();
        for n in 0..2 {
            let telemetry = local_addr();
            let config = format!("{}{}", common(telemetry), sampler_section("sample-rest"));
            samplers.push(Process::new(&dir, &format!("sampler-{n}"), "sampler", &config, Ready::Health(telemetry)));
        }

        let telemetry = local_addr();
        let shared = format!(
            "batch: {{ max_bytes: {EXPORTER_BATCH_MIB}MiB, timeout: 200ms }}, timeout: 5s, \
             retry_on_failure: {{ initial_interval: 100ms, max_interval: 2s }}"
        );
        let config = format!(
            "{}exporters:\n  jaeger: {{ endpoint: '{}', {shared} }}\n  prometheus_remote_write: {{ endpoint: 'http://{}/api/v1/write', {shared} }}\n  \
             loki: {{ endpoint: '{}', {shared} }}\n",
            common(telemetry),
            jaeger.endpoint(),
            prometheus_path.addr,
            loki.endpoint()
        );
        let exporter = Process::new(&dir, "exporter", "exporter", &config, Ready::Health(telemetry));

        Pipeline {
            dir,
            kafka,
            broker,
            gateways,
            gateway_addrs,
            samplers,
            exporter,
            jaeger,
            loki,
            prometheus,
            prometheus_path,
        }
    }

    /// Starts the broker, then every worker.
    pub async fn start(&mut self) {
        if let Broker::Tansu(broker) = &mut self.broker {
            broker.start().await;
        }
        for process in self.workers_mut() {
            process.start().await;
        }
    }

    /// The workers: gateways, samplers, the exporter.
    pub fn workers_mut(&mut self) -> impl Iterator<Item = &mut Process> {
        self.gateways.iter_mut().chain(self.samplers.iter_mut()).chain(std::iter::once(&mut self.exporter))
    }

    pub fn all(&self) -> Vec<&Process> {
        let mut all = Vec::new();
        if let Broker::Tansu(broker) = &self.broker {
            all.push(broker);
        }
        all.extend(self.gateways.iter().chain(&self.samplers).chain(std::iter::once(&self.exporter)));
        all
    }

    /// Stops every process with SIGTERM, workers first.
    pub fn stop(&mut self) {
        for process in self.workers_mut() {
            process.stop();
        }
        if let Broker::Tansu(broker) = &mut self.broker {
            broker.stop();
        }
    }
}

/// The Kafka-API broker of a run (see the module docs).
pub enum Broker {
    Kafka(Cluster),
    Tansu(Process),
    Mock(MockCluster<'static, DefaultProducerContext>),
}

/// The RSS a process of `name` may reach: what its config lets it hold, plus [`OVERHEAD_MIB`]. The broker has no
/// configured limit; it gets the overhead plus what the gateways may have in flight towards it.
pub fn rss_bound_mib(name: &str) -> u64 {
    let held = match name {
        n if n.starts_with("gateway") => GATEWAY_IN_FLIGHT_MIB,
        n if n.starts_with("sampler") => SAMPLER_BUFFER_MIB + SAMPLER_OUTPUT_MIB,
        "exporter" => 3 * EXPORTER_BATCH_MIB,
        _ => 2 * GATEWAY_IN_FLIGHT_MIB,
    };
    held + OVERHEAD_MIB
}

//! The fault scheduler: during the load, at seeded intervals (5–15 s apart), one fault at a time dealt from a seeded
//! shuffle of the kinds, each healed before the next
//! and every one logged with its offset from the start of the load. The same seed gives the same faults at the same
//! offsets.
//!
//! The kinds: a worker (gateway, sampler, exporter) SIGKILLed and restarted, or SIGSTOPped then SIGCONTed; Jaeger
//! answering `UNAVAILABLE` for a while; Loki answering 503s, or 429 with `Retry-After`; the broker SIGKILLed and
//! restarted on the same data directory; a foreign record with a timestamp an hour ahead written straight to the
//! spans topic; records that are not OTLP written straight to the spans, logs and metrics topics.

use std::time::{Duration, Instant};

use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::pipeline::{Broker, Pipeline};
use crate::harness::backends::Answer;
use crate::harness::otlp::{now_ns, trace_request};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    KillWorker,
    PauseWorker,
    JaegerDown,
    LokiDown,
    Loki429,
    PrometheusDown,
    KillBroker,
    FutureRecord,
    NotOtlp,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::KillWorker,
        Kind::PauseWorker,
        Kind::JaegerDown,
        Kind::LokiDown,
        Kind::Loki429,
        Kind::PrometheusDown,
        Kind::KillBroker,
        Kind::FutureRecord,
        Kind::NotOtlp,
    ];

    /// The kinds a run without `TAILGATE_CAMPAIGN_FAULTS` injects: the schedule the short run in the suite is known
    /// to pass on Tansu. `prometheus_down` (Prometheus SIGKILLed and restarted on its data) and `kill_broker` are
    /// in `all`; see `pipeline.rs` for what Tansu and MockCluster do under the schedules that include them.
    pub const DEFAULT: [Kind; 7] = [
        Kind::KillWorker,
        Kind::PauseWorker,
        Kind::JaegerDown,
        Kind::LokiDown,
        Kind::Loki429,
        Kind::FutureRecord,
        Kind::NotOtlp,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::KillWorker => "kill_worker",
            Kind::PauseWorker => "pause_worker",
            Kind::JaegerDown => "jaeger_down",
            Kind::LokiDown => "loki_down",
            Kind::Loki429 => "loki_429",
            Kind::PrometheusDown => "prometheus_down",
            Kind::KillBroker => "kill_broker",
            Kind::FutureRecord => "future_record",
            Kind::NotOtlp => "not_otlp",
        }
    }

    /// `TAILGATE_CAMPAIGN_FAULTS` (names, comma-separated; `none` for a run without faults; `all`), else
    /// [`Kind::DEFAULT`].
    pub fn from_env() -> Vec<Kind> {
        match std::env::var("TAILGATE_CAMPAIGN_FAULTS") {
            Err(_) => Kind::DEFAULT.to_vec(),
            Ok(text) if text.trim() == "none" => Vec::new(),
            Ok(text) if text.trim() == "all" => Kind::ALL.to_vec(),
            Ok(text) => text
                .split(',')
                .map(|name| {
                    *Kind::ALL
                        .iter()
                        .find(|k| k.name() == name.trim())
                        .unwrap_or_else(|| panic!("TAILGATE_CAMPAIGN_FAULTS: no fault kind `{name}`"))
                })
                .collect(),
        }
    }
}

/// SplitMix64: a seeded generator small enough to write out, so a seed means the same schedule everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)` milliseconds.
    pub fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the faults left behind that is not the client's: trace IDs (hex) written straight to the spans topic.
#[derive(Default)]
pub struct Injected {
    pub foreign_traces: Vec<String>,
    pub log: Vec<(Duration, String)>,
}

/// Injects faults from `kinds` until `until` after `started` (the load's start), then returns with every fault
/// healed.
pub async fn run(pipeline: &mut Pipeline, seed: u64, kinds: &[Kind], started: Instant, until: Duration) -> Injected {
    let mut rng = Rng::new(seed);
    let mut injected = Injected::default();
    if kinds.is_empty() {
        return injected;
    }
    // The first fault after the pipeline has settled into the load, the last one healed before the load ends.
    let mut next = started + rng.millis(10_000, 15_000);
    // Dealt from a shuffled deck of the kinds, so a short run still meets every kind once.
    let mut deck: Vec<Kind> = Vec::new();
    loop {
        tokio::time::sleep_until(next.into()).await;
        if started.elapsed() + Duration::from_secs(15) > until {
            return injected;
        }
        if deck.is_empty() {
            deck = kinds.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, rng.below(i + 1));
            }
        }
        let kind = deck.pop().unwrap();
        let what = inject(pipeline, kind, &mut rng, &mut injected).await;
        let at = next - started;
        eprintln!("fault at {:>6.1}s: {what} (healed at {:.1}s)", at.as_secs_f64(), started.elapsed().as_secs_f64());
        injected.log.push((at, what));
        next = Instant::now() + rng.millis(5_000, 15_000);
    }
}

async fn inject(pipeline: &mut Pipeline, kind: Kind, rng: &mut Rng, injected: &mut Injected) -> String {
    match kind {
        Kind::KillWorker => {
            let n = rng.below(pipeline.workers_mut().count());
            let down = rng.millis(500, 3_000);
            let worker = pipeline.workers_mut().nth(n).unwrap();
            worker.kill();
            tokio::time::sleep(down).await;
            worker.start().await;
            format!("SIGKILL {}, restarted after {down:?}", worker.name)
        }
        Kind::PauseWorker => {
            let n = rng.below(pipeline.workers_mut().count());
            let paused = rng.millis(2_000, 6_000);
            let worker = pipeline.workers_mut().nth(n).unwrap();
            worker.signal("-STOP");
            tokio::time::sleep(paused).await;
            worker.signal("-CONT");
            format!("SIGSTOP {} for {paused:?}, then SIGCONT", worker.name)
        }
        Kind::JaegerDown => {
            let down = rng.millis(3_000, 10_000);
            pipeline.jaeger.answer(Answer::Unavailable);
            tokio::time::sleep(down).await;
            pipeline.jaeger.answer(Answer::Accept);
            format!("Jaeger answers UNAVAILABLE for {down:?}")
        }
        Kind::LokiDown => {
            let answers = 3 + rng.below(8);
            pipeline.loki.script(std::iter::repeat_n((503, None, "Loki is restarting"), answers));
            let loki = pipeline.loki.clone();
            crate::harness::eventually(Duration::from_secs(60), || loki.state.lock().unwrap().script.is_empty()).await;
            format!("Loki answers 503 to the next {answers} pushes")
        }
        Kind::Loki429 => {
            let retry_after = 1 + rng.below(3) as u64;
            pipeline.loki.script([(429, Some(retry_after), "ingestion rate limit exceeded")]);
            let loki = pipeline.loki.clone();
            crate::harness::eventually(Duration::from_secs(60), || loki.state.lock().unwrap().script.is_empty()).await;
            format!("Loki answers 429 with Retry-After: {retry_after}")
        }
        Kind::PrometheusDown => {
            let down = rng.millis(2_000, 8_000);
            pipeline.prometheus.kill();
            tokio::time::sleep(down).await;
            pipeline.prometheus.restart().await;
            format!("SIGKILL Prometheus, restarted on its data directory after {down:?}")
        }
        Kind::KillBroker => {
            let down = rng.millis(500, 3_000);
            match &mut pipeline.broker {
                Broker::Tansu(broker) => {
                    broker.kill();
                    tokio::time::sleep(down).await;
                    broker.start().await;
                    format!("SIGKILL the broker, restarted on the same data directory after {down:?}")
                }
                Broker::Mock(mock) => {
                    mock.broker_down(1).unwrap();
                    tokio::time::sleep(down).await;
                    mock.broker_up(1).unwrap();
                    format!("the broker down for {down:?}, then up with its log (MockCluster)")
                }
            }
        }
        Kind::FutureRecord => {
            let trace_id: Vec<u8> = (0..16).map(|_| rng.next() as u8).collect();
            let span = opentelemetry_proto::tonic::trace::v1::Span {
                trace_id: trace_id.clone(),
                span_id: rng.next().to_be_bytes().to_vec(),
                name: "from the future".into(),
                start_time_unix_nano: now_ns() + 3_600_000_000_000,
                end_time_unix_nano: now_ns() + 3_600_001_000_000,
                status: Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, message: String::new() }),
                ..Default::default()
            };
            let hour_ahead = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
                as i64
                + 3_600_000;
            let value = trace_request(vec![span]).encode_to_vec();
            let partition = rng.below(super::pipeline::PARTITIONS as usize) as i32;
            produce(pipeline, &pipeline.kafka.topics.spans.clone(), partition, &trace_id, &value, Some(hour_ahead))
                .await;
            injected.foreign_traces.push(hex::encode(&trace_id));
            format!(
                "a foreign ERROR span with a record timestamp an hour ahead, straight to spans partition {partition}"
            )
        }
        Kind::NotOtlp => {
            let t = pipeline.kafka.topics.clone();
            for topic in [&t.spans, &t.logs, &t.metrics] {
                let partition = rng.below(super::pipeline::PARTITIONS as usize) as i32;
                produce(pipeline, topic, partition, b"garbage", b"\xff\xfe this is not OTLP", None).await;
            }
            "a record that is not OTLP, straight to each of the spans, logs and metrics topics".to_owned()
        }
    }
}

async fn produce(pipeline: &Pipeline, topic: &str, partition: i32, key: &[u8], value: &[u8], timestamp: Option<i64>) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", &pipeline.kafka.brokers).create().unwrap();
    let mut record = FutureRecord::to(topic).partition(partition).key(key).payload(value);
    if let Some(ms) = timestamp {
        record = record.timestamp(ms);
    }
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the broker takes the record");
}

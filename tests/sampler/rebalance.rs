//! A sampler rebalance must not stall ingest. In `all-in-one` the gateway and the sampler share one tokio runtime;
//! a newly assigned partition's decisions are loaded before it is consumed, which can take seconds on a large
//! backlog. That work runs on the consumer's own thread, so the gateway keeps answering meanwhile.
//!
//! The fault would show with a runtime of one worker thread (`TOKIO_WORKER_THREADS=1`): loading on a runtime
//! thread would leave no thread to answer requests until it finished.

use std::io::BufRead;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tailgate_proto::decisions::Decision;
use tailgate_proto::partition_for_key;

use crate::harness::{self, binary, http};

const PARTITIONS: u32 = 2;
/// Decisions waiting in the decisions topic: enough that loading them takes a while.
const BACKLOG: u32 = 400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_answers_while_a_rebalance_loads_a_large_decision_backlog() {
    let brokers = harness::apache_kafka();
    let kafka = harness::kafka_config(&brokers, PARTITIONS);
    let none: &[(&str, &str)] = &[];
    tailgate_kafka::ensure_topics(&kafka, &[(&kafka.topics.decisions, none)], Duration::from_secs(30)).await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "50")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let value = Decision { keep: false, policy: String::new() }.encode_v1();
    let sends: Vec<_> = (0..BACKLOG)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            key[4..8].copy_from_slice(&0x5eed_u32.to_be_bytes());
            let partition = partition_for_key(&key, PARTITIONS) as i32;
            let record =
                FutureRecord::to(&kafka.topics.decisions).partition(partition).key(&key[..]).payload(&value[..]);
            producer.send_result(record).expect("queued")
        })
        .collect();
    for send in sends {
        send.await.unwrap().expect("decision written");
    }

    let dir = harness::temp_dir("rebalance");
    let (http_port, grpc, metrics) = (harness::free_port(), harness::free_port(), harness::free_port());
    let config = dir.join("tailgate.yaml");
    std::fs::write(
        &config,
        format!(
            "embedded_broker: {{ enabled: false }}\n{}\
             ingest: {{ grpc: {{ endpoint: 127.0.0.1:{grpc} }}, http: {{ endpoint: 127.0.0.1:{http_port} }} }}\n\
             telemetry: {{ metrics: {{ endpoint: 127.0.0.1:{metrics} }} }}\n",
            harness::kafka::kafka_yaml(&kafka)
        ),
    )
    .unwrap();
    let mut child = binary::tailgate()
        .args(["all-in-one", "--config"])
        .arg(&config)
        .env_remove("TAILGATE_KAFKA_BROKERS")
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // When the sampler began and finished loading, from its log.
    let (loading, loaded) = (Arc::new(Mutex::new(None)), Arc::new(Mutex::new(None)));
    // Reaching a partition's end is not an error: a new user reading ERROR at start thinks it is broken.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    {
        let (loading, loaded, errors) = (Arc::clone(&loading), Arc::clone(&loaded), Arc::clone(&errors));
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = without_colours(&line);
                if line.contains(" ERROR ") {
                    errors.lock().unwrap().push(line.clone());
                }
                if line.contains("loading recent decisions") {
                    loading.lock().unwrap().get_or_insert(Instant::now());
                } else if line.contains("recent decisions loaded") {
                    assert!(line.contains(&format!("decisions={BACKLOG}")), "every decision is loaded: {line}");
                    loaded.lock().unwrap().get_or_insert(Instant::now());
                }
            }
        });
    }

    // Requests one after another until the load is over: (sent, answered, status).
    let addr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"x"}]}]}]}"#;
    let mut answers: Vec<(Instant, Instant, u16)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while loaded.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the sampler never finished loading its decisions");
        assert!(child.try_wait().unwrap().is_none(), "all-in-one exited early");
        if std::net::TcpStream::connect(addr).is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let sent = Instant::now();
        let response = http::post(addr, "/v1/traces", "application/json", body).await;
        answers.push((sent, Instant::now(), response.status));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    binary::signal(&child, "-TERM");
    let _ = child.wait();
    assert_eq!(errors.lock().unwrap().as_slice(), &[] as &[String], "no ERROR while starting and rebalancing");

    let (loading, loaded) = (loading.lock().unwrap().expect("loading was logged"), loaded.lock().unwrap().unwrap());
    let window = loaded - loading;
    assert!(window >= Duration::from_millis(300), "loading took {window:?}: too short a backlog to test anything");
    let during: Vec<_> = answers.iter().filter(|(sent, answered, _)| *sent >= loading && *answered < loaded).collect();
    assert!(during.iter().all(|(_, _, status)| *status == 200), "{during:?}");
    assert!(
        during.len() >= 3,
        "only {} requests were answered during the {window:?} of loading: the rebalance stalled the gateway",
        during.len()
    );
}

/// A log line without its terminal colour codes.
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

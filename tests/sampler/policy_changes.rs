//! Trying policies before they drop data: a dry run keeps every trace and marks what the policies would have done;
//! policies reload on a changed file or SIGHUP, an invalid file refused with its problems and the running policies
//! kept. Against Apache Kafka.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tailgate_sampler::{SamplerConfig, WOULD_KEEP_ATTRIBUTE, WOULD_POLICY_ATTRIBUTE};

use crate::harness::otlp::{now_ns, trace_id};
use crate::harness::{self, binary, http, topic};

/// Trace `t`: two spans; every fifth fails, every seventh takes 3 s.
fn spans(traces: impl Iterator<Item = u64>) -> Vec<Span> {
    let start = now_ns();
    traces
        .flat_map(|t| {
            (0..2u64).map(move |s| Span {
                trace_id: trace_id(t),
                span_id: (t * 10 + s + 1).to_be_bytes().to_vec(),
                name: format!("t{t}-s{s}"),
                start_time_unix_nano: start,
                end_time_unix_nano: start + if t % 7 == 0 && s == 0 { 3_000_000_000 } else { 1_000_000 },
                status: (t % 5 == 0 && s == 1)
                    .then(|| Status { code: status::StatusCode::Error as i32, message: "declined".into() }),
                ..Default::default()
            })
        })
        .collect()
}

/// The kept spans in the sampled topic, by trace number (of `0..1000`).
fn kept(records: &[harness::Record]) -> BTreeMap<u64, Vec<Span>> {
    let mut by_trace: BTreeMap<u64, Vec<Span>> = BTreeMap::new();
    for (_, span) in topic::spans(records) {
        let t = (0..1000).find(|t| trace_id(*t) == span.trace_id).expect("a trace sent");
        by_trace.entry(t).or_default().push(span);
    }
    by_trace
}

const POLICIES: &str = "\
    - { name: errors-always, type: status_code, status_code: { status_codes: [ERROR] } }\n\
    - { name: slow-requests, type: latency, latency: { threshold_ms: 2000 } }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_keeps_every_trace_and_marks_what_the_policies_would_have_done() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let config: SamplerConfig =
        tailgate_config::from_yaml(&format!("dry_run: true\ndecision_wait: 1s\npolicies:\n{POLICIES}")).unwrap();
    let sampler = harness::start_sampler(&config, &kafka, "sampler").await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    client.export(harness::trace_request(spans(0..60))).await.unwrap();

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(30), |r| {
        topic::count_spans(r) >= 120
    });
    let kept = kept(&records);
    assert_eq!(kept.len(), 60, "every trace kept");
    for (t, spans) in &kept {
        // What the seed's first two policies say, in their order: errors first.
        let would: Option<&str> = if t % 5 == 0 {
            Some("errors-always")
        } else if t % 7 == 0 {
            Some("slow-requests")
        } else {
            None
        };
        assert_eq!(spans.len(), 2, "trace {t} whole");
        for span in spans {
            let get = |key: &str| span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.clone());
            let flag = get(WOULD_KEEP_ATTRIBUTE).and_then(|v| v.value);
            assert_eq!(flag, Some(any_value::Value::BoolValue(would.is_some())), "trace {t}");
            let policy = get(WOULD_POLICY_ATTRIBUTE).and_then(|v| v.value);
            assert_eq!(policy, would.map(|p| any_value::Value::StringValue(p.to_owned())), "trace {t}");
            assert!(span.trace_state.is_empty(), "no sampling threshold: nothing was sampled away");
        }
    }
    let kept_by_policy = (0..60).filter(|t| t % 5 == 0 || t % 7 == 0).count();
    assert_eq!(kept_by_policy, 12 + 9 - 2, "the policies would keep 19 of the 60");
    sampler.stop().await;
    gateway.stop().await;
}

/// The value of the unlabelled `metric` on a Prometheus page.
fn metric(page: &str, metric: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(metric)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics_page(port: u16) -> String {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    match tokio::time::timeout(Duration::from_secs(2), http::try_request(addr, "GET", "/metrics", &[], b"")).await {
        Ok(Ok(response)) => String::from_utf8_lossy(&response.body).into_owned(),
        _ => String::new(),
    }
}

async fn until_metric(port: u16, name: &str, value: f64, sampler: &mut Child) {
    for _ in 0..300 {
        if metric(&metrics_page(port).await, name) == Some(value) {
            return;
        }
        assert!(sampler.try_wait().unwrap().is_none(), "the sampler exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never reached {value}: {}", metrics_page(port).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_reload_from_a_changed_file_and_an_invalid_one_is_refused() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let port = harness::free_port();
    let path = harness::temp_dir("reload").join("tailgate.yaml");
    let write = |policies: &str| {
        let yaml = format!(
            "{}telemetry: {{ metrics: {{ endpoint: '127.0.0.1:{port}' }} }}\nsampler:\n  decision_wait: 1s\n  \
             policies:\n{}",
            harness::kafka::kafka_yaml(&kafka),
            policies.lines().map(|l| format!("  {}\n", l.trim_start())).collect::<String>()
        );
        std::fs::write(&path, yaml).unwrap();
    };
    write("- { name: errors-always, type: status_code, status_code: { status_codes: [ERROR] } }");
    let log = path.with_extension("log");
    let mut sampler = binary::tailgate()
        .args(["sampler", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    until_metric(port, "tailgate_sampler_config_generation", 1.0, &mut sampler).await;

    // Generation 1 keeps errors only.
    client.export(harness::trace_request(spans(0..20))).await.unwrap();
    let read = |at_least: usize| {
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(30), move |r| {
            topic::count_spans(r) >= at_least
        })
    };
    let first = kept(&read(8));
    assert_eq!(first.keys().copied().collect::<BTreeSet<u64>>(), BTreeSet::from([0, 5, 10, 15]));

    // A valid change of the file: generation 2 keeps everything; what was decided stands.
    write("- { name: everything, type: always_sample }");
    until_metric(port, "tailgate_sampler_config_generation", 2.0, &mut sampler).await;
    client.export(harness::trace_request(spans(100..120))).await.unwrap();
    let second = kept(&read(8 + 40));
    let expected: BTreeSet<u64> = [0, 5, 10, 15].into_iter().chain(100..120).collect();
    assert_eq!(second.keys().copied().collect::<BTreeSet<u64>>(), expected);

    // An invalid file is refused, with the problem's path; the running policies stay. SIGHUP reads it again.
    write("- { name: everything, type: keep_it_all }");
    until_metric(port, "tailgate_sampler_config_reload_failures_total", 1.0, &mut sampler).await;
    binary::signal(&sampler, "-HUP");
    until_metric(port, "tailgate_sampler_config_reload_failures_total", 2.0, &mut sampler).await;
    client.export(harness::trace_request(spans(200..210))).await.unwrap();
    let third = kept(&read(8 + 40 + 20));
    assert!((200..210).all(|t| third.contains_key(&t)), "still generation 2: everything kept");
    assert_eq!(metric(&metrics_page(port).await, "tailgate_sampler_config_generation"), Some(2.0));

    // An emptied file (truncated, or caught half-written) is refused too: parsed, it would be the defaults, and
    // 10% probabilistic would replace the running policies.
    std::fs::write(&path, "").unwrap();
    until_metric(port, "tailgate_sampler_config_reload_failures_total", 3.0, &mut sampler).await;
    assert_eq!(metric(&metrics_page(port).await, "tailgate_sampler_config_generation"), Some(2.0));

    binary::signal(&sampler, "-TERM");
    tokio::task::spawn_blocking(move || sampler.wait().unwrap()).await.unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("configuration reload refused"), "{stderr}");
    assert!(stderr.contains("sampler.policies[0].type"), "the problem with its path: {stderr}");
    assert!(stderr.contains("the file is empty"), "{stderr}");
    gateway.stop().await;
}

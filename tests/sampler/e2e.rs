//! Sampler workers against Apache Kafka: completeness, the policies' promises, determinism on replay.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use prost::Message;
use tailgate_proto::partition_for_key;
use tailgate_sampler::SamplerConfig;

use crate::harness::otlp::trace_id;
use crate::harness::{self, topic};

const PARTITIONS: u32 = 4;
const TRACES: u32 = 200;
const SPANS_PER_TRACE: u32 = 4;

/// Span `s` of every trace: traces 0..20 fail, 20..40 take 3 s, the rest are fast and fine.
fn request_of_span(s: u32) -> ExportTraceServiceRequest {
    let start = 1_700_000_000_000_000_000u64;
    let spans = (0..TRACES)
        .map(|t| Span {
            trace_id: trace_id(t.into()),
            span_id: ((t * 10 + s + 1) as u64).to_be_bytes().to_vec(),
            name: format!("t{t}-s{s}"),
            start_time_unix_nano: start,
            end_time_unix_nano: start + if (20..40).contains(&t) && s == 0 { 3_000_000_000 } else { 1_000_000 },
            status: (t < 20 && s == SPANS_PER_TRACE - 1)
                .then(|| Status { code: status::StatusCode::Error as i32, message: "payment declined".into() }),
            ..Default::default()
        })
        .collect();
    harness::trace_request(spans)
}

fn config() -> SamplerConfig {
    let red_metrics = tailgate_sampler::red::RedMetricsConfig {
        interval: tailgate_config::Duration::from_secs(1),
        ..Default::default()
    };
    SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(2), red_metrics, ..SamplerConfig::default() }
}

/// The latest cumulative value of every `traces.span.metrics.calls` series, summed: (all calls, error calls).
fn red_calls(records: &[harness::Record]) -> (i64, i64) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
    let mut latest: HashMap<String, (i64, bool)> = HashMap::new();
    for record in records {
        let request = ExportMetricsServiceRequest::decode(record.value.as_slice()).unwrap();
        for rm in request.resource_metrics {
            let resource = format!("{:?}", rm.resource);
            for m in rm.scope_metrics.into_iter().flat_map(|s| s.metrics) {
                let (true, Some(metric::Data::Sum(sum))) = (m.name == tailgate_sampler::red::CALLS, m.data) else {
                    continue;
                };
                for point in sum.data_points {
                    let error = format!("{:?}", point.attributes).contains("STATUS_CODE_ERROR");
                    let Some(number_data_point::Value::AsInt(value)) = point.value else { continue };
                    let entry = latest.entry(format!("{resource}{:?}", point.attributes)).or_insert((0, error));
                    entry.0 = entry.0.max(value);
                }
            }
        }
    }
    let total = latest.values().map(|(v, _)| v).sum();
    let errors = latest.values().filter(|(_, e)| *e).map(|(v, _)| v).sum();
    (total, errors)
}

/// Kept spans by trace (name list), with the partition each was found on.
fn kept(records: &[harness::Record]) -> HashMap<Vec<u8>, Vec<(String, i32, String)>> {
    let mut out: HashMap<Vec<u8>, Vec<(String, i32, String)>> = HashMap::new();
    for (partition, span) in topic::spans(records) {
        out.entry(span.trace_id).or_default().push((span.name, partition, span.trace_state));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_traces_arrive_whole_and_replays_decide_the_same() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), PARTITIONS);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let first = harness::start_sampler(&config(), &kafka, "tailgate-sampler").await;

    // Each trace's spans arrive in four different requests, hence four different records.
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    for s in 0..SPANS_PER_TRACE {
        client.export(request_of_span(s)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let must_keep: Vec<Vec<u8>> = (0..40).map(trace_id).collect();
    // Of the 160 fast, successful traces the probabilistic policy keeps exactly those its hash of the trace ID
    // keeps, whenever their spans arrive: the set is known before the sampler runs.
    let hashed_rest: BTreeSet<Vec<u8>> = (40..TRACES)
        .map(|t| trace_id(t.into()))
        .filter(|id| harness::sampling::probabilistic_keeps(id, 10.0))
        .collect();
    // Pinned as well as computed: a change to `trace_id` or to the seed's policies shows here first, not as a
    // sampler failure.
    assert_eq!(hashed_rest.len(), 13, "the hash keeps 13 of the 160 fast traces");
    let records =
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(60), |r| {
            let kept = kept(r);
            must_keep
                .iter()
                .chain(&hashed_rest)
                .all(|t| kept.get(t).is_some_and(|spans| spans.len() >= SPANS_PER_TRACE as usize))
        });
    // A moment more, so that a trace kept wrongly (decided at the same time) would have landed too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = if records.is_empty() {
        records
    } else {
        harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, PARTITIONS, Duration::from_secs(5), |r| {
            r.len() >= records.len()
        })
    };
    let kept_first = kept(&records);

    for t in &must_keep {
        assert!(kept_first.contains_key(t), "every error and every slow trace is kept");
    }
    for (trace, spans) in &kept_first {
        let names: BTreeSet<&str> = spans.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names.len(), SPANS_PER_TRACE as usize, "a kept trace arrives whole");
        assert_eq!(spans.len(), SPANS_PER_TRACE as usize, "and once");
        let partition = partition_for_key(trace, PARTITIONS) as i32;
        assert!(spans.iter().all(|(_, p, _)| *p == partition), "on its trace's partition");
    }
    let sampled_rest: BTreeSet<Vec<u8>> = kept_first.keys().filter(|t| !must_keep.contains(t)).cloned().collect();
    assert_eq!(sampled_rest, hashed_rest, "of the fast traces, exactly those the probabilistic policy's hash keeps");
    for t in &sampled_rest {
        assert!(
            kept_first[t].iter().all(|(_, _, state)| state == "ot=th:e6666666666666"),
            "probabilistic keeps carry their threshold in tracestate"
        );
    }

    // RED metrics count every span, kept or not, before sampling: 200 traces of 4 spans, 20 of them failed.
    let metrics =
        harness::read_topic(&kafka.brokers, &kafka.topics.metrics, PARTITIONS, Duration::from_secs(30), |r| {
            red_calls(r).0 >= (TRACES * SPANS_PER_TRACE) as i64
        });
    assert_eq!(red_calls(&metrics), ((TRACES * SPANS_PER_TRACE) as i64, 20));

    // A second group reading the same spans topic from the start (a replay) keeps exactly the same traces.
    let mut replay = kafka.clone();
    replay.topics.sampled_spans = format!("{}-replay", kafka.topics.sampled_spans);
    // Its own decisions topic too: the replay must decide afresh, not read the first group's decisions.
    replay.topics.decisions = format!("{}-replay", kafka.topics.decisions);
    replay.topics.metrics = format!("{}-replay", kafka.topics.metrics);
    let replaying = harness::start_sampler(&config(), &replay, "tailgate-sampler-replay").await;
    let expected: BTreeSet<Vec<u8>> = kept_first.keys().cloned().collect();
    let replayed =
        harness::read_topic(&kafka.brokers, &replay.topics.sampled_spans, PARTITIONS, Duration::from_secs(60), |r| {
            kept(r).keys().cloned().collect::<BTreeSet<_>>() == expected
        });
    let replayed: BTreeSet<Vec<u8>> = kept(&replayed).keys().cloned().collect();
    assert_eq!(replayed, expected, "decisions are deterministic on replay");

    first.stop().await;
    replaying.stop().await;
    gateway.stop().await;
}

/// An undecodable record goes to `<spans>.dlq` with its error and the partition moves on; a trace that reaches
/// `max_spans_per_trace` is decided at once (long before `decision_wait`) and its later spans follow the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_huge_traces_decided_early() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let config = SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(300),
        max_spans_per_trace: 50,
        record_policy: true,
        ..SamplerConfig::default()
    };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;

    let producer: rdkafka::producer::FutureProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &kafka.brokers).create().unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(&kafka.topics.spans)
                .partition(0)
                .payload(&[0xff, 0xff, 0xff][..]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

    // One failing trace of 200 spans, in four requests.
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    for part in 0..4u64 {
        let spans = (0..50u64)
            .map(|i| Span {
                trace_id: vec![7; 16],
                span_id: (part * 50 + i + 1).to_be_bytes().to_vec(),
                status: Some(Status { code: status::StatusCode::Error as i32, message: String::new() }),
                ..Default::default()
            })
            .collect();
        let request = harness::trace_request(spans);
        client.export(request).await.unwrap();
    }

    let sampled = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(30), |r| {
        kept(r).get(&vec![7; 16]).is_some_and(|s| s.len() >= 200)
    });
    let spans = kept(&sampled).remove(&vec![7u8; 16]).unwrap_or_default();
    assert_eq!(spans.len(), 200, "decided early at 50 spans; the other 150 followed the decision");
    let marked = topic::spans(&sampled)
        .into_iter()
        .filter(|(_, s)| {
            s.attributes.iter().any(|kv| {
                kv.key == tailgate_sampler::POLICY_ATTRIBUTE && format!("{:?}", kv.value).contains("errors-always")
            })
        })
        .count();
    assert_eq!(marked, 50, "record_policy names the keeping policy on the spans it decided");

    let dlq = harness::read_topic(
        &kafka.brokers,
        &tailgate_proto::headers::dead_letter_topic(&kafka.topics.spans),
        2,
        Duration::from_secs(20),
        |r| !r.is_empty(),
    );
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value, [0xff, 0xff, 0xff]);
    let error = dlq[0].header(tailgate_proto::headers::DLQ_ERROR);
    assert!(error.is_some_and(|e| !e.is_empty()), "the error travels with the record");
    // Where it came from (partition 0, written before anything else) and who refused it.
    assert_eq!(dlq[0].header(tailgate_proto::headers::DLQ_SOURCE).as_deref(), Some("0:0"));
    assert_eq!(dlq[0].header(tailgate_proto::headers::DLQ_STAGE).as_deref(), Some("sampler"));

    sampler.stop().await;
    gateway.stop().await;
}

/// Decisions outlive the worker: a new worker, whose own policy would decide differently, loads them from the
/// decisions topic, so late spans follow the first decision and kept traces are not emitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_outlive_the_worker() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let policy = |salt: &str| {
        let yaml = format!(
            "[{{ name: half, type: probabilistic, probabilistic: {{ sampling_percentage: 50, hash_salt: {salt} }} }}]"
        );
        SamplerConfig {
            decision_wait: tailgate_config::Duration::from_secs(1),
            policies: tailgate_config::from_yaml(&yaml).unwrap(),
            ..SamplerConfig::default()
        }
    };
    let sampler = harness::start_sampler(&policy("first"), &kafka, "tailgate-sampler").await;
    for s in 0..2 {
        client.export(request_of_span(s)).await.unwrap();
    }
    let decisions = harness::read_topic(&kafka.brokers, &kafka.topics.decisions, 2, Duration::from_secs(30), |r| {
        topic::decisions(r).iter().map(|d| d.trace_id.clone()).collect::<BTreeSet<_>>().len() >= TRACES as usize
    });
    let first: HashMap<Vec<u8>, bool> =
        topic::decisions(&decisions).into_iter().map(|d| (d.trace_id, d.keep)).collect();
    assert_eq!(first.len(), TRACES as usize);
    sampler.stop().await;

    // A different salt would flip about half of the decisions, were they made again.
    let sampler = harness::start_sampler(&policy("second"), &kafka, "tailgate-sampler").await;
    for s in 2..SPANS_PER_TRACE {
        client.export(request_of_span(s)).await.unwrap();
    }
    let kept_first: Vec<&Vec<u8>> = first.iter().filter(|(_, keep)| **keep).map(|(t, _)| t).collect();
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(30), |r| {
        let kept = kept(r);
        kept_first.iter().all(|t| kept.get(*t).is_some_and(|s| s.len() >= SPANS_PER_TRACE as usize))
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(5), |r| {
        r.len() >= records.len()
    });
    let kept_now = kept(&records);
    for (trace, keep) in &first {
        let spans = kept_now.get(trace).map_or(0, Vec::len);
        if *keep {
            assert_eq!(
                spans, SPANS_PER_TRACE as usize,
                "kept by the first worker: late spans follow, nothing emitted twice"
            );
        } else {
            assert_eq!(spans, 0, "dropped by the first worker: late spans are dropped too");
        }
    }
    sampler.stop().await;
    gateway.stop().await;
}

/// Two tenants send a trace with the same trace ID (the same span IDs, the same names): the sampler keeps them
/// apart. `payments` has a policy of its own (keep everything); every other tenant has the default (errors only).
/// Exactly payments' spans are kept, written as payments; each tenant's RED series are its own records.
/// Before tenants were kept apart, the four spans were one trace, decided by the default policy: dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_traces_of_one_trace_id_are_decided_and_written_apart() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let mut ingest = harness::ingest_config();
    ingest.http.tenant_header = Some("X-Scope-OrgID".into());
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;
    let yaml = "policies: [ { name: errors, type: status_code, status_code: { status_codes: [ERROR] } } ]\n\
                tenants: { payments: { policies: [ { name: everything, type: always_sample } ] } }\n\
                decision_wait: 1s\nred_metrics: { interval: 1s }\n";
    let config: SamplerConfig = tailgate_config::from_yaml(yaml).unwrap();
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let span = |s: u64| Span {
        trace_id: trace_id(7),
        span_id: s.to_be_bytes().to_vec(),
        name: format!("s{s}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    };
    for tenant in ["cart", "payments"] {
        let body = harness::trace_request(vec![span(1), span(2)]).encode_to_vec();
        let headers = [("Content-Type", "application/x-protobuf"), ("X-Scope-OrgID", tenant)];
        assert_eq!(harness::http::request(gateway.http, "POST", "/v1/traces", &headers, &body).await.status, 200);
    }
    let decisions = harness::read_topic(&kafka.brokers, &kafka.topics.decisions, 2, Duration::from_secs(30), |r| {
        topic::decisions(r).len() >= 2
    });
    let mut decided: Vec<(Option<String>, bool)> =
        topic::decisions(&decisions).into_iter().map(|d| (d.tenant, d.keep)).collect();
    decided.sort();
    assert_eq!(decided, [(Some("cart".into()), false), (Some("payments".into()), true)], "one decision per tenant");
    // The same trace ID for both, in records of their own: on a topic an earlier version made compacted, one key
    // would leave only the newer tenant's decision.
    let keys: std::collections::BTreeSet<&Vec<u8>> = decisions.iter().map(|r| &r.key).collect();
    assert_eq!(keys.len(), 2, "each tenant's decision under a key of its own");
    let sampled = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 2, Duration::from_secs(10), |r| {
        topic::spans(r).len() >= 2
    });
    assert_eq!(topic::spans(&sampled).len(), 2, "payments' two spans, and not cart's");
    assert!(sampled.iter().all(|r| r.header(tailgate_proto::headers::TENANT).as_deref() == Some("payments")));
    // Until each tenant's calls are in: a tenant's RED metrics may span records, the calls not in the first.
    let own_calls = |r: &[harness::Record], tenant: &str| {
        let own: Vec<_> = r
            .iter()
            .filter(|r| r.header(tailgate_proto::headers::TENANT).as_deref() == Some(tenant))
            .cloned()
            .collect();
        red_calls(&own)
    };
    let red = harness::read_topic(&kafka.brokers, &kafka.topics.metrics, 2, Duration::from_secs(30), |r| {
        own_calls(r, "cart") == (2, 0) && own_calls(r, "payments") == (2, 0)
    });
    for tenant in ["cart", "payments"] {
        let own: Vec<_> = red
            .iter()
            .filter(|r| r.header(tailgate_proto::headers::TENANT).as_deref() == Some(tenant))
            .cloned()
            .collect();
        assert_eq!(red_calls(&own), (2, 0), "{tenant}'s RED series count its own two spans");
    }
    assert!(red.iter().all(|r| r.header(tailgate_proto::headers::TENANT).is_some()), "no RED record without a tenant");
    sampler.stop().await;
    gateway.stop().await;
}

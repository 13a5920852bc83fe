//! Spans the gateway would have refused can still reach the spans topic from another producer. The sampler counts
//! each one it cannot pass on, by reason, instead of skipping it silently or settling it as written.

use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use prost::Message;
use rdkafka::producer::FutureRecord;
use tailgate_proto::partition_for_key;
use tailgate_sampler::SamplerConfig;

use crate::harness::{self, topic};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_with_invalid_ids_are_counted_by_reason() {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let failed = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
    let trace = vec![7u8; 16];
    let spans = vec![
        Span { trace_id: trace.clone(), span_id: vec![1; 8], status: failed.clone(), ..Default::default() },
        // Kept with its trace, but a 3-byte span ID cannot go to the sampled topic.
        Span { trace_id: trace.clone(), span_id: vec![2; 3], status: failed.clone(), ..Default::default() },
        // Belongs to no trace at all.
        Span { trace_id: vec![9; 8], span_id: vec![3; 8], status: failed, ..Default::default() },
    ];
    let value = harness::trace_request(spans).encode_to_vec();
    let config = SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(1),
        policies: tailgate_config::from_yaml(
            "[{ name: errors, type: status_code, status_code: { status_codes: [ERROR] } }]",
        )
        .unwrap(),
        ..SamplerConfig::default()
    };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let producer = harness::kafka::producer(&kafka.brokers);
    let record = FutureRecord::to(&kafka.topics.spans)
        .partition(partition_for_key(&trace, 1) as i32)
        .key(&trace[..])
        .payload(&value[..]);
    producer.send(record, Duration::from_secs(10)).await.expect("written");

    let records = {
        let kafka = kafka.clone();
        tokio::task::spawn_blocking(move || {
            harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 1, Duration::from_secs(30), |r| {
                !r.is_empty()
            })
        })
        .await
        .unwrap()
    };
    let kept: Vec<Span> = records
        .iter()
        .flat_map(|r| ExportTraceServiceRequest::decode(r.value.as_slice()).unwrap().resource_spans)
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect();
    assert_eq!(kept.len(), 1, "only the valid span of the kept trace: {kept:?}");
    assert_eq!(kept[0].span_id, vec![1; 8]);
    assert!(
        harness::eventually(Duration::from_secs(10), || sampler.stats.invalid_spans.load(Ordering::SeqCst) == 2).await,
        "one invalid_trace_id and one invalid_id: {}",
        sampler.stats.invalid_spans.load(Ordering::SeqCst)
    );
    // The kept trace as the sampler would have written it, invalid span and all, is in the dead-letter topic: its
    // record's offset settled only once it was somewhere.
    let dlq = tailgate_proto::headers::dead_letter_topic(&kafka.topics.spans);
    let dead = {
        let brokers = kafka.brokers.clone();
        tokio::task::spawn_blocking(move || {
            harness::read_topic(&brokers, &dlq, 1, Duration::from_secs(20), |r| !r.is_empty())
        })
        .await
        .unwrap()
    };
    assert_eq!(dead.len(), 1, "one dead letter for the kept trace");
    let error = dead[0].header(tailgate_proto::headers::DLQ_ERROR).unwrap_or_default();
    assert!(error.starts_with("invalid_id:"), "{error}");
    let spans: Vec<Vec<u8>> = ExportTraceServiceRequest::decode(dead[0].value.as_slice())
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| s.span_id)
        .collect();
    assert_eq!(spans, [vec![1; 8], vec![2; 3]], "the whole kept trace");
    sampler.stop().await;
}

/// An error trace's record with `headers`, as another producer could write it, read by a sampler: what the
/// dead-letter topic holds (its `tailgate.error` header) and how many records reached the sampled topic.
async fn error_trace_with_headers(headers: rdkafka::message::OwnedHeaders) -> (Vec<String>, usize) {
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let failed = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
    let trace = vec![5u8; 16];
    let value = harness::trace_request(vec![Span {
        trace_id: trace.clone(),
        span_id: vec![1; 8],
        status: failed,
        ..Default::default()
    }])
    .encode_to_vec();
    let config = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let producer = harness::kafka::producer(&kafka.brokers);
    let record =
        FutureRecord::to(&kafka.topics.spans).partition(0).key(&trace[..]).payload(&value[..]).headers(headers);
    producer.send(record, Duration::from_secs(10)).await.expect("written");
    // Then an error trace without headers, as the Collector writes them, after it on the partition: once it is in
    // the sampled topic, the record before it has been handled too.
    let sentinel = vec![6u8; 16];
    let sentinel_value = harness::trace_request(vec![Span {
        trace_id: sentinel.clone(),
        span_id: vec![2; 8],
        status: Some(Status { code: status::StatusCode::Error as i32, message: String::new() }),
        ..Default::default()
    }])
    .encode_to_vec();
    let record = FutureRecord::to(&kafka.topics.spans).partition(0).key(&sentinel[..]).payload(&sentinel_value[..]);
    producer.send(record, Duration::from_secs(10)).await.expect("written");

    let dlq = tailgate_proto::headers::dead_letter_topic(&kafka.topics.spans);
    let brokers = kafka.brokers.clone();
    let dead = tokio::task::spawn_blocking(move || {
        harness::read_topic(&brokers, &dlq, 1, Duration::from_secs(30), |r| !r.is_empty())
    })
    .await
    .unwrap();
    let errors = dead.iter().map(|r| r.header("tailgate.error").unwrap_or_default()).collect();
    let sampled = harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 1, Duration::from_secs(30), |r| {
        topic::spans(r).iter().any(|(_, s)| s.trace_id == sentinel)
    });
    let spans = topic::spans(&sampled);
    assert!(spans.iter().any(|(_, s)| s.trace_id == sentinel), "the sentinel trace was kept: the sampler got past");
    sampler.stop().await;
    (errors, spans.iter().filter(|(_, s)| s.trace_id == trace).count())
}

/// A record of a contract major version this build does not know may mean anything: it is dead-lettered with the
/// reason, not read as OTLP — even when it decodes as OTLP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_an_unknown_contract_version_is_dead_lettered_not_read() {
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = OwnedHeaders::new().insert(Header { key: "tailgate.contract", value: Some("2") });
    let (errors, sampled) = error_trace_with_headers(headers).await;
    assert_eq!(errors.len(), 1, "the record is dead-lettered");
    assert!(errors[0].starts_with("unknown_contract: ") && errors[0].contains("version 2"), "{errors:?}");
    assert_eq!(sampled, 0, "not read as OTLP");
}

/// A tenant header that is no tenant ID was not written by a gateway. Before, the sampler took any value as a
/// tenant, held its name for the life of the process and wrote it back to the sampled topic, from where the
/// exporters sent it to the backends as `X-Scope-OrgID`; now the record is dead-lettered with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_tenant_is_no_tenant_id_is_dead_lettered() {
    use rdkafka::message::{Header, OwnedHeaders};
    let headers = OwnedHeaders::new().insert(Header { key: "tailgate.tenant", value: Some("../other tenant") });
    let (errors, sampled) = error_trace_with_headers(headers).await;
    assert_eq!(errors.len(), 1, "the record is dead-lettered");
    assert!(errors[0].starts_with("invalid_tenant: the tailgate.tenant header: a tenant ID is"), "{errors:?}");
    assert_eq!(sampled, 0, "not read as that tenant's");
}

/// Error spans sized across the gateway's record limit, each its own trace: every one the gateway acknowledged is
/// kept in the sampled topic, marks and all — none is counted `too_large` and settled unwritten. Before the
/// gateway left room for the sampler's marks and tenant header, the spans within ~200 bytes of the limit were
/// acknowledged, then lost in the sampler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_span_the_gateway_accepted_near_the_limit_reaches_the_sampled_topic() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    const MAX: usize = 65_536;
    let mut kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    kafka.producer.max_message_bytes = tailgate_config::ByteSize::b(MAX as u64);
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let config = SamplerConfig {
        decision_wait: tailgate_config::Duration::from_secs(1),
        record_policy: true,
        ..SamplerConfig::default()
    };
    let sampler = harness::start_sampler(&config, &kafka, "tailgate-sampler").await;
    let mut client = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let failed = Some(Status { code: status::StatusCode::Error as i32, message: String::new() });
    let mut accepted = std::collections::BTreeSet::new();
    for n in 0..80u64 {
        let span = Span {
            trace_id: harness::otlp::trace_id(n),
            span_id: (n + 1).to_be_bytes().to_vec(),
            name: "x".repeat(MAX - 2_000 + 25 * n as usize),
            status: failed.clone(),
            ..Default::default()
        };
        let answer = client.export(harness::trace_request(vec![span])).await.unwrap().into_inner();
        if answer.partial_success.is_none_or(|p| p.rejected_spans == 0) {
            accepted.insert(harness::otlp::trace_id(n));
        }
    }
    // The sizes cross the limit: some spans fit, the rest are refused for good.
    assert!(!accepted.is_empty() && accepted.len() < 80, "{} of 80 accepted", accepted.len());

    let records = {
        let (kafka, accepted) = (kafka.clone(), accepted.clone());
        tokio::task::spawn_blocking(move || {
            harness::read_topic(&kafka.brokers, &kafka.topics.sampled_spans, 1, Duration::from_secs(30), |r| {
                let kept: std::collections::BTreeSet<Vec<u8>> =
                    crate::harness::topic::spans(r).into_iter().map(|(_, s)| s.trace_id).collect();
                accepted.is_subset(&kept)
            })
        })
        .await
        .unwrap()
    };
    let kept: std::collections::BTreeSet<Vec<u8>> =
        crate::harness::topic::spans(&records).into_iter().map(|(_, s)| s.trace_id).collect();
    let lost = accepted.difference(&kept).count();
    eprintln!(
        "near the record limit: {} spans acknowledged, {} kept in the sampled topic, lost {lost}, too_large in the \
         sampler {}",
        accepted.len(),
        kept.len(),
        sampler.stats.invalid_spans.load(Ordering::SeqCst)
    );
    assert_eq!(lost, 0, "acknowledged error spans that never reached the sampled topic");
    assert_eq!(kept, accepted, "exactly the acknowledged ones");
    assert_eq!(sampler.stats.invalid_spans.load(Ordering::SeqCst), 0);
    sampler.stop().await;
    gateway.stop().await;
}

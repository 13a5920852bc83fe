//! Kafka over mutual TLS, configured with `kafka.security`: every client of every role — the gateway's producer
//! and admin client, the sampler's consumer, producer and decision loader, the exporter's consumer — connects
//! through a TLS terminator in front of Tansu that refuses clients without a certificate from the test's CA, and
//! Tansu advertises only the terminator's address. A role that skipped `kafka.security` could not reach the broker.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use tailgate_config::Problems;
use tailgate_exporters::jaeger::JaegerConfig;
use tailgate_exporters::ExportersConfig;
use tailgate_kafka::{ensure_topics, KafkaConfig, KafkaTls, Protocol, SecurityConfig};
use tailgate_sampler::SamplerConfig;

use crate::harness::backends::TraceReceiver;
use crate::harness::certs::{self, Pki};
use crate::harness::otlp::trace_id;
use crate::harness::{self, eventually};

fn with_tls(kafka: &KafkaConfig, tls: KafkaTls) -> KafkaConfig {
    let security = SecurityConfig { protocol: Protocol::Ssl, sasl: None, tls: Some(tls) };
    KafkaConfig { security, ..kafka.clone() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reaches_kafka_over_mutual_tls() {
    let pki = Pki::new("kafka-tls");
    let ca = pki.ca("ca");
    let (broker, client) = (pki.leaf(&ca, "broker"), pki.leaf(&ca, "tailgate"));
    let brokers = harness::kafka::tansu_behind_tls(certs::server_config(&broker, Some(&ca)));
    let tls = KafkaTls {
        ca_file: Some(ca.cert.clone()),
        cert_file: Some(client.cert.clone()),
        key_file: Some(client.key.clone()),
    };
    let kafka = with_tls(&harness::kafka_config(&brokers, 2), tls.clone());
    let mut problems = Problems::default();
    kafka.validate("kafka", &mut problems);
    assert!(problems.is_empty(), "{problems}");

    // The terminator really asks for a client certificate, and the client really checks the broker's: without
    // the one, or trusting another CA, nothing gets through.
    let probe = |kafka: KafkaConfig| async move {
        let settings: &[(&str, &str)] = &[];
        ensure_topics(&kafka, &[("tls-probe", settings)], Duration::from_secs(5)).await.map_err(|e| e.to_string())
    };
    let anonymous = with_tls(&kafka, KafkaTls { cert_file: None, key_file: None, ..tls.clone() });
    assert!(probe(anonymous).await.is_err(), "a client without a certificate was let through");
    let other = pki.ca("other");
    let misled = with_tls(&kafka, KafkaTls { ca_file: Some(other.cert.clone()), ..tls.clone() });
    assert!(probe(misled).await.is_err(), "a broker certificate from an untrusted CA was accepted");
    let plaintext = KafkaConfig { security: SecurityConfig::default(), ..kafka.clone() };
    assert!(probe(plaintext).await.is_err(), "plaintext reached the broker through the terminator");

    let jaeger = TraceReceiver::start().await;
    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let policy = SamplerConfig { decision_wait: tailgate_config::Duration::from_secs(1), ..SamplerConfig::default() };
    let sampler = harness::start_sampler(&policy, &kafka, "tailgate-sampler").await;
    let exporters = ExportersConfig {
        jaeger: Some(JaegerConfig {
            endpoint: format!("http://{}", jaeger.addr),
            retry_on_failure: harness::fast_retry(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let exporter = harness::start_exporter(&exporters, &kafka, tailgate_exporters::JAEGER).await;

    // A root that succeeds, then its failing child: kept by the seed's error policy, both spans delivered.
    let now = harness::otlp::now_ns();
    let span = |id: u8, error: bool| Span {
        trace_id: trace_id(7),
        span_id: vec![id; 8],
        name: format!("span-{id}"),
        start_time_unix_nano: now,
        end_time_unix_nano: now + 1_000_000,
        status: error.then(|| Status { code: status::StatusCode::Error as i32, message: "declined".into() }),
        ..Default::default()
    };
    let mut otlp = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    otlp.export(harness::trace_request(vec![span(1, false)])).await.unwrap();
    otlp.export(harness::trace_request(vec![span(2, true)])).await.unwrap();
    let delivered = eventually(Duration::from_secs(60), || jaeger.span_count() == 2).await;
    assert!(delivered, "{} of 2 spans delivered: {:?}", jaeger.span_count(), exporter.health.last_failure());

    exporter.stop().await;
    sampler.stop().await;
    gateway.stop().await;
}

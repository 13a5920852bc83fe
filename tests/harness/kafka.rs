//! Kafka for tests: a broker on a free port (Tansu in-process, or librdkafka's MockCluster for faults), topics no
//! other test uses, and the `kafka:` config that points at them — as a struct for roles started in this process, as
//! YAML for the binary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tailgate::embedded_broker::{EmbeddedBroker, Storage};
use tailgate_kafka::{KafkaConfig, Topics};

use super::local::free_port;

/// A fresh Tansu broker (in memory) on a free port. It lives until the test process exits.
pub fn tansu() -> String {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    EmbeddedBroker::start(addr, Storage::Memory).expect("Tansu starts").addr.to_string()
}

/// librdkafka's mock cluster, for fault injection.
pub fn mock_cluster() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster starts")
}

/// A config for `mock` with every topic of the pipeline (and the spans' dead-letter topic) created on it, since
/// MockCluster cannot be asked to create them the way a role does.
pub fn mock_kafka(mock: &MockCluster<'static, DefaultProducerContext>, partitions: u32) -> KafkaConfig {
    let kafka = kafka_config(&mock.bootstrap_servers(), partitions);
    let t = &kafka.topics;
    let dead_letters = tailgate_proto::headers::dead_letter_topic(&t.spans);
    for topic in [&t.spans, &t.metrics, &t.logs, &t.sampled_spans, &t.decisions, &dead_letters] {
        mock.create_topic(topic, partitions as i32, 1).unwrap();
    }
    kafka
}

/// Topic names no other test uses.
fn unique_topics() -> Topics {
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    Topics {
        spans: format!("spans-{id}"),
        metrics: format!("metrics-{id}"),
        logs: format!("logs-{id}"),
        sampled_spans: format!("sampled-{id}"),
        decisions: format!("decisions-{id}"),
    }
}

pub fn kafka_config(brokers: &str, partitions: u32) -> KafkaConfig {
    KafkaConfig { brokers: brokers.to_owned(), topics: unique_topics(), partitions, ..KafkaConfig::default() }
}

/// The `kafka:` section of a config file for the binary, with the brokers, partitions and topics of `kafka`.
pub fn kafka_yaml(kafka: &KafkaConfig) -> String {
    let t = &kafka.topics;
    let producer =
        kafka.producer.idempotence.map(|on| format!(", producer: {{ idempotence: {on} }}")).unwrap_or_default();
    let consumer = kafka
        .consumer
        .session_timeout
        .map(|t| format!(", consumer: {{ session_timeout: {}ms }}", t.get().as_millis()))
        .unwrap_or_default();
    format!(
        "kafka: {{ brokers: '{}', partitions: {}, topics: {{ spans: {}, metrics: {}, logs: {}, sampled_spans: {}, \
         decisions: {} }}{producer}{consumer} }}\n",
        kafka.brokers, kafka.partitions, t.spans, t.metrics, t.logs, t.sampled_spans, t.decisions
    )
}

/// A fresh Tansu broker behind a TLS terminator (rustls, with `tls`'s certificate and client verification), the
/// broker advertising the terminator's address as `localhost:<port>`, so every connection a client makes, to
/// bootstrap and to the partition leader, is TLS. Returns the bootstrap address. Tansu 0.6 accepts a TLS config
/// but serves plaintext only, so the TLS end is this proxy's; the Kafka protocol behind it is Tansu's.
pub fn tansu_behind_tls(tls: std::sync::Arc<rustls::ServerConfig>) -> String {
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let advertised = format!("localhost:{}", proxy.local_addr().unwrap().port());
    let broker: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    EmbeddedBroker::start_advertising(broker, &advertised, Storage::Memory).expect("Tansu starts");
    proxy.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let proxy = tokio::net::TcpListener::from_std(proxy).unwrap();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            loop {
                let Ok((tcp, _)) = proxy.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake (no or a foreign client certificate) just closes the connection.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(broker).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    advertised
}

//! A listener holds at most `ingest.max_connections` connections open: past it, a new connection waits to be
//! accepted until one closes, instead of costing the gateway a socket and protocol state each.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{self, http};

/// A keep-alive connection that has been served once, and so was accepted; it stays open.
async fn served_connection(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut stream = BufReader::new(stream);
    let request = format!("POST /nowhere HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await.unwrap();
    let mut status = String::new();
    stream.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_a_connection_waits_until_one_closes() {
    let mut ingest = harness::ingest_config();
    ingest.max_connections = 2;
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 2)).await;

    let first = served_connection(gateway.http).await;
    let _second = served_connection(gateway.http).await;
    let third = tokio::spawn(http::try_request(gateway.http, "POST", "/nowhere", &[], b""));
    // Two connections are open: the third is not accepted, so not answered, however long it waits.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!third.is_finished(), "a third connection was served while two were open");

    drop(first);
    let answered = tokio::time::timeout(Duration::from_secs(10), third).await.expect("served once one closed");
    assert_eq!(answered.unwrap().unwrap().status, 404);
    gateway.stop().await;
}

/// Connections opened and left silent — any host can open them, before TLS or authentication — are closed after
/// `ingest.first_byte_timeout` and their slots given back. With 2 slots held by 2 silent connections, a client's
/// export over HTTP and over gRPC is answered once the silent ones time out, instead of never (as before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_hold_every_slot() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use prost::Message as _;
    use tokio::io::AsyncReadExt;

    let mut ingest = harness::ingest_config();
    ingest.max_connections = 2;
    ingest.first_byte_timeout = tailgate_config::Duration::from_secs(1);
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 2)).await;
    let request = harness::trace_request(vec![opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![3; 16],
        span_id: vec![4; 8],
        ..Default::default()
    }]);

    for (transport, addr) in [("http", gateway.http), ("grpc", gateway.grpc)] {
        let mut silent = Vec::new();
        for _ in 0..2 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        let started = std::time::Instant::now();
        let answered = tokio::time::timeout(Duration::from_secs(10), async {
            if transport == "http" {
                let headers = [("Content-Type", "application/x-protobuf")];
                let response = http::request(addr, "POST", "/v1/traces", &headers, &request.encode_to_vec()).await;
                assert_eq!(response.status, 200);
            } else {
                let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
                client.export(request.clone()).await.unwrap();
            }
        })
        .await;
        let waited = started.elapsed();
        assert!(answered.is_ok(), "{transport}: two silent connections held every slot for 10 s");
        // The state the test is about: both slots were held until the silent connections timed out.
        assert!(waited >= Duration::from_millis(700), "{transport}: answered after {waited:?}, before any timed out");
        // Closed by the gateway (after whatever it sent first: HTTP/2's SETTINGS).
        for mut stream in silent {
            let mut sent = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut sent)).await;
            assert!(read.is_ok(), "{transport}: a silent connection was still open");
        }
    }
    gateway.stop().await;
}

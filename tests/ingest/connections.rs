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

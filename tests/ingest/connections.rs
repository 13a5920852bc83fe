//! A listener holds at most `ingest.max_connections` connections open: past it, a new connection waits to be
//! accepted until one closes, instead of costing the gateway a socket and protocol state each. A gRPC connection
//! carries at most `ingest.grpc.max_concurrent_streams` requests at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::h2::{
    Frame, DATA, END_STREAM, GOAWAY, H2, HEADERS, MAX_CONCURRENT_STREAMS, PING, REFUSED_STREAM, RST_STREAM,
};
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

/// A connection from `source` (a loopback address of its own), served once.
async fn served_from(source: &str, addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    let mut stream = BufReader::new(socket.connect(addr).await?);
    let request = format!("POST /nowhere HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut status = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_line(&mut status)).await??;
    if status.starts_with("HTTP/1.1 404") {
        Ok(stream)
    } else {
        Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, format!("not served: {status:?}")))
    }
}

/// With `max_connections_per_source: 2`, one host's third connection is closed at once while another host is
/// still served: one host cannot take every slot. Without the bound, the third is served (as before it existed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_cannot_take_every_slot() {
    let mut ingest = harness::ingest_config();
    ingest.max_connections = 8;
    ingest.max_connections_per_source = 2;
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 1)).await;

    let _first = served_from("127.0.0.2", gateway.http).await.expect("a host's first connection is served");
    let second = served_from("127.0.0.2", gateway.http).await.expect("a host's second connection is served");
    let third = served_from("127.0.0.2", gateway.http).await;
    assert!(third.is_err(), "a host's third connection was served: {third:?}");
    let _other = served_from("127.0.0.3", gateway.http).await.expect("another host is served");
    // A closed connection gives its host's slot back.
    drop(second);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_from("127.0.0.2", gateway.http).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "a closed connection's slot was not given back to its host");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
}

/// `ingest.{grpc,http}.keepalive.server_parameters` as the Collector's: the gateway pings an HTTP/2 connection
/// `time` after its last frame and closes it when the ping goes unanswered for `timeout`; a connection
/// `max_connection_age` old is sent GOAWAY. Before these keys existed on the gRPC port, and before OTLP/HTTP was
/// served with timers (`axum::serve` sets none), the server pinged nobody and connections lived for ever (the raw
/// connections here would have seen nothing but SETTINGS until the 120 s idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pings_idle_connections_and_retires_old_ones() {
    let listeners = |gateway: &harness::RunningGateway| [("grpc", gateway.grpc), ("http", gateway.http)];
    let mut ingest = harness::ingest_config();
    for keepalive in [&mut ingest.grpc.keepalive.server_parameters, &mut ingest.http.keepalive.server_parameters] {
        keepalive.time = Some(tailgate_config::Duration::from_millis(500));
        keepalive.timeout = tailgate_config::Duration::from_millis(500);
    }
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 1)).await;
    for (listener, addr) in listeners(&gateway) {
        let mut h2 = H2::open(addr).await;
        let started = std::time::Instant::now();
        let ping = tokio::time::timeout(Duration::from_secs(10), h2.frame(false)).await;
        let ping = ping.unwrap_or_else(|_| panic!("{listener}: not pinged within 10 s"));
        assert_eq!(ping.as_ref().map(|f| (f.kind, f.flags)), Some((PING, 0)), "{listener}: {ping:?}");
        // Unanswered: the connection is closed (a GOAWAY may come first).
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(Frame { kind, .. }) = h2.frame(false).await {
                assert!(kind == GOAWAY || kind == PING, "{listener}: frame {kind} after an unanswered ping");
            }
        })
        .await;
        assert!(closed.is_ok(), "{listener}: an unanswered ping did not close the connection");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(900), "{listener}: closed after {waited:?}, before time + timeout");
    }
    gateway.stop().await;

    let mut ingest = harness::ingest_config();
    ingest.grpc.keepalive.server_parameters.max_connection_age = Some(tailgate_config::Duration::from_secs(1));
    ingest.http.keepalive.server_parameters.max_connection_age = Some(tailgate_config::Duration::from_secs(1));
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 1)).await;
    for (listener, addr) in listeners(&gateway) {
        let mut h2 = H2::open(addr).await;
        let started = std::time::Instant::now();
        let frame = tokio::time::timeout(Duration::from_secs(10), h2.frame(true)).await;
        let frame = frame.unwrap_or_else(|_| panic!("{listener}: no frame within 10 s"));
        assert_eq!(frame.as_ref().map(|f| f.kind), Some(GOAWAY), "{listener}: GOAWAY at max age: {frame:?}");
        let waited = started.elapsed();
        // OTLP/HTTP draws each connection's age within ±10% of it.
        assert!(waited >= Duration::from_millis(800), "{listener}: GOAWAY after {waited:?}, before the max age");
    }
    // HTTP/1.1 has no GOAWAY: an idle keep-alive connection past its age is closed.
    let mut kept_alive = served_connection(gateway.http).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        use tokio::io::AsyncReadExt;
        loop {
            let mut chunk = [0u8; 1024];
            match kept_alive.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an HTTP/1.1 connection past max_connection_age was still open after 10 s");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    gateway.stop().await;
}

/// An HTTP/1.1 request's headers must arrive whole within `ingest.first_byte_timeout`, however steadily they
/// trickle in: a client sending a byte every 200 ms (never silent for `idle_timeout`) is cut off, its slot given
/// back. Before OTLP/HTTP was served with a timer, hyper's header-read timeout never fired and it held the slot for
/// as long as it kept trickling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_trickled_in_are_cut_off() {
    let mut ingest = harness::ingest_config();
    ingest.first_byte_timeout = tailgate_config::Duration::from_secs(1);
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 1)).await;
    let mut stream = TcpStream::connect(gateway.http).await.unwrap();
    let started = std::time::Instant::now();
    let headers = format!("POST /v1/traces HTTP/1.1\r\nHost: {}\r\nX-Slow: {}", gateway.http, "a".repeat(200));
    let mut cut_off = None;
    for byte in headers.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() {
            cut_off = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Closed by the server: a read sees the end (or a 408 first).
        let mut peek = [0u8; 64];
        if let Ok(Ok(read)) = tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut peek)).await {
            let _ = read;
            cut_off = Some(started.elapsed());
            break;
        }
    }
    let cut_off = cut_off.expect("headers trickled for 40 s were never cut off");
    assert!(cut_off >= Duration::from_millis(900), "cut off after {cut_off:?}, before the timeout");
    assert!(cut_off < Duration::from_secs(5), "cut off after {cut_off:?}");
    gateway.stop().await;
}

/// A gRPC request on a raw HTTP/2 stream `id`: headers, then trace `n` (one span) as one gRPC message, ending the
/// stream.
async fn export_on_stream(h2: &mut H2, addr: SocketAddr, id: u32, n: u8) {
    use prost::Message as _;
    let authority = addr.to_string();
    let headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/opentelemetry.proto.collector.trace.v1.TraceService/Export"),
        (":authority", authority.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    h2.headers(id, &headers, false).await;
    let span = opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![n; 16],
        span_id: vec![n; 8],
        name: "checkout".into(),
        ..Default::default()
    };
    let message = harness::trace_request(vec![span]).encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    h2.data(id, &frame, true).await;
}

/// The kinds of the frames the server sends on each stream until each of `streams` ended (END_STREAM or
/// RST_STREAM); panics if that takes more than `timeout` or the connection closes.
async fn answers(h2: &mut H2, streams: &[u32], timeout: Duration) -> BTreeMap<u32, Vec<u8>> {
    let mut answers: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut open: Vec<u32> = streams.to_vec();
    let read = tokio::time::timeout(timeout, async {
        while !open.is_empty() {
            let frame = h2.frame(true).await.expect("the connection closed");
            assert!(frame.kind != GOAWAY, "GOAWAY: {frame:?}");
            answers.entry(frame.stream).or_default().push(frame.kind);
            if frame.kind == RST_STREAM || frame.flags & END_STREAM != 0 {
                open.retain(|id| *id != frame.stream);
            }
        }
    })
    .await;
    assert!(read.is_ok(), "not answered within {timeout:?}: {answers:?}");
    answers
}

/// A gRPC connection carries at most `ingest.grpc.max_concurrent_streams` requests at once (README, 100 by
/// default): the gateway advertises the bound in its SETTINGS, and a client that opens a stream past it, while the
/// others wait on a Kafka that does not answer, has it refused (`RST_STREAM` `REFUSED_STREAM`: nothing of it was
/// read, so a client may send it again). Once Kafka answers, the waiting requests are answered with their
/// responses and a new stream on the same connection is served. Kafka holds exactly the requests answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_connection_carries_at_most_max_concurrent_streams_requests() {
    use std::collections::BTreeSet;

    let mock = harness::mock_cluster();
    let mut kafka = harness::mock_kafka(&mock, 1);
    // Far longer than the test waits with Kafka down: the held requests are answered only once it is back.
    kafka.producer.delivery_timeout = tailgate_config::Duration::from_secs(60);

    let gateway = harness::start_gateway(harness::ingest_config(), kafka.clone()).await;
    let mut h2 = H2::open(gateway.grpc).await;
    let settings = h2.settings().await;
    assert!(settings.contains(&(MAX_CONCURRENT_STREAMS, 100)), "the default, 100, advertised: {settings:?}");
    drop(h2);
    gateway.stop().await;

    let mut ingest = harness::ingest_config();
    ingest.grpc.max_concurrent_streams = 2;
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;
    let mut h2 = H2::open(gateway.grpc).await;
    let settings = h2.settings().await;
    assert!(settings.contains(&(MAX_CONCURRENT_STREAMS, 2)), "the configured bound advertised: {settings:?}");

    mock.broker_down(1).unwrap();
    for (id, n) in [(1, 1), (3, 2), (5, 3)] {
        export_on_stream(&mut h2, gateway.grpc, id, n).await;
    }
    // The first answer while Kafka is down: the third stream refused, the two before it still waiting.
    let first = tokio::time::timeout(Duration::from_secs(10), h2.frame(true)).await.expect("no answer within 10 s");
    let first = first.expect("the connection closed");
    assert_eq!(
        (first.kind, first.stream, first.error_code()),
        (RST_STREAM, 5, Some(REFUSED_STREAM)),
        "the stream past the bound is refused, before anything else is answered: {first:?}"
    );

    mock.broker_up(1).unwrap();
    // A response message (DATA) before the end: served. An error would be answered with trailers only.
    let mut held = answers(&mut h2, &[1, 3], Duration::from_secs(45)).await;
    // The refused stream's DATA, sent after its HEADERS, arrived on a stream already reset: reset again.
    if let Some(again) = held.remove(&5) {
        assert!(again.iter().all(|kind| *kind == RST_STREAM), "the refused stream was answered: {again:?}");
    }
    assert_eq!(held.keys().collect::<Vec<_>>(), [&1, &3], "{held:?}");
    for id in [1, 3] {
        assert_eq!(held[&id].first(), Some(&HEADERS), "stream {id}: {held:?}");
        assert!(held[&id].contains(&DATA), "stream {id} was served once Kafka answered: {held:?}");
    }
    export_on_stream(&mut h2, gateway.grpc, 7, 4).await;
    let next = answers(&mut h2, &[7], Duration::from_secs(30)).await;
    assert_eq!(next.keys().collect::<Vec<_>>(), [&7], "{next:?}");
    assert!(next[&7].contains(&DATA), "a new stream is served once the others ended: {next:?}");
    drop(h2);
    gateway.stop().await;

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |records| {
        harness::topic::trace_ids(records).len() >= 3
    });
    let written: BTreeSet<Vec<u8>> = harness::topic::trace_ids(&records).into_iter().collect();
    let expected: BTreeSet<Vec<u8>> = [1u8, 2, 4].into_iter().map(|n| vec![n; 16]).collect();
    assert_eq!(written, expected, "exactly the requests answered are in Kafka, not the refused one");
}

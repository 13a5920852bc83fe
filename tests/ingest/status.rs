//! The OTLP status matrix: what each kind of bad input gets, over gRPC and HTTP, asserted by code and message.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tailgate_proto::status::Status;
use tonic::codec::CompressionEncoding;
use tonic::Code;

use crate::harness::{self, http, RunningGateway};

const LIMIT: u64 = 64 * 1024;

async fn gateway() -> RunningGateway {
    let mut ingest = harness::ingest_config();
    ingest.max_request_bytes = tailgate_config::ByteSize::b(LIMIT);
    harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 4)).await
}

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, pad: usize) -> Span {
    Span { trace_id, span_id, name: "x".repeat(pad), ..Default::default() }
}

fn valid(n: u8) -> Span {
    span(vec![n; 16], vec![n; 8], 10)
}

/// 10 valid spans and one each of: all-zero trace ID, short trace ID, all-zero span ID, long span ID.
fn with_invalid_ids() -> ExportTraceServiceRequest {
    let mut spans: Vec<Span> = (1..=10).map(valid).collect();
    spans.push(span(vec![0; 16], vec![1; 8], 1));
    spans.push(span(vec![1; 15], vec![1; 8], 1));
    spans.push(span(vec![1; 16], vec![0; 8], 1));
    spans.push(span(vec![1; 16], vec![1; 9], 1));
    harness::trace_request(spans)
}

fn oversized() -> ExportTraceServiceRequest {
    harness::trace_request(vec![span(vec![1; 16], vec![1; 8], LIMIT as usize + 10)])
}

/// A message whose field 1 (resource_spans) holds bytes that are not a ResourceSpans.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbage {
    #[prost(bytes = "vec", tag = "1")]
    resource_spans: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_status_matrix() {
    let gateway = gateway().await;
    let mut client =
        TraceServiceClient::connect(gateway.grpc_url()).await.unwrap().max_encoding_message_size(usize::MAX);

    // Empty request: success, partial_success unset.
    let response = client.export(ExportTraceServiceRequest::default()).await.unwrap().into_inner();
    assert_eq!(response.partial_success, None);

    // Invalid IDs: partial success with the exact count; the valid spans are accepted.
    let response = client.export(with_invalid_ids()).await.unwrap().into_inner();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 4);
    assert!(partial.error_message.contains("invalid trace or span ID"), "{}", partial.error_message);

    // Over the limit, uncompressed and compressed with either encoding the README names (gzip, zstd): after
    // decompression, RESOURCE_EXHAUSTED without RetryInfo (not retryable).
    for compression in [None, Some(CompressionEncoding::Gzip), Some(CompressionEncoding::Zstd)] {
        let mut client = client.clone();
        if let Some(encoding) = compression {
            client = client.send_compressed(encoding);
        }
        let status = client.export(oversized()).await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{compression:?}: {status:?}");
        assert!(status.message().contains("limit"), "{}", status.message());
        let details = Status::decode(status.details()).unwrap_or_default();
        assert_eq!(details.retry_delay(), None, "an over-size request must not be retried");
    }

    // Exactly at the limit: accepted.
    let base = harness::trace_request(vec![span(vec![1; 16], vec![1; 8], 0)]).encoded_len();
    let at_limit = (LIMIT as usize - base - 20..LIMIT as usize)
        .map(|pad| harness::trace_request(vec![span(vec![1; 16], vec![1; 8], pad)]))
        .find(|r| r.encoded_len() == LIMIT as usize)
        .unwrap();
    assert_eq!(at_limit.encoded_len(), LIMIT as usize);
    client.export(at_limit).await.expect("a request of exactly the limit is accepted");

    // zstd-compressed within the limit: accepted, nothing rejected.
    let response = client
        .clone()
        .send_compressed(CompressionEncoding::Zstd)
        .export(harness::trace_request(vec![valid(5)]))
        .await
        .expect("a zstd-compressed request is accepted")
        .into_inner();
    assert_eq!(response.partial_success, None, "zstd");

    // Undecodable: INVALID_ARGUMENT.
    let channel = tonic::transport::Endpoint::from_shared(gateway.grpc_url()).unwrap().connect().await.unwrap();
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let status = raw
        .unary::<_, ExportTraceServiceResponse, _>(
            tonic::Request::new(Garbage { resource_spans: vec![0xff, 0xff, 0xff] }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("cannot decode"), "{}", status.message());

    // Unknown method of a known service, and an unknown service: UNIMPLEMENTED (the README's status table).
    for unknown in [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Import",
        "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
    ] {
        raw.ready().await.unwrap();
        let status = raw
            .unary::<_, ExportTraceServiceResponse, _>(
                tonic::Request::new(ExportTraceServiceRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(unknown),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unimplemented, "{unknown}: {status:?}");
    }

    gateway.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// `data` as one zstd frame (RFC 8878) of a single raw block: magic number, a single-segment frame header with a
/// 4-byte content size, then the last block's 3-byte header (raw, `data.len()` bytes) and the bytes. A valid frame
/// any decoder reads, written out here because the tests have no zstd encoder of their own.
fn zstd_raw(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 128 * 1024, "one raw block holds at most 128 KiB");
    let mut frame = vec![0x28, 0xb5, 0x2f, 0xfd, 0b1010_0000];
    frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
    let block = ((data.len() as u32) << 3) | 1;
    frame.extend_from_slice(&block.to_le_bytes()[..3]);
    frame.extend_from_slice(data);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_status_matrix() {
    let gateway = gateway().await;
    let addr = gateway.http;
    let proto = "application/x-protobuf";

    // Success in both encodings; the response mirrors the request's.
    let ok = http::post(addr, "/v1/traces", proto, &harness::trace_request(vec![valid(1)]).encode_to_vec()).await;
    assert_eq!((ok.status, ok.header("content-type")), (200, Some(proto)));
    let ok = http::post(addr, "/v1/traces", "application/json; charset=utf-8", b"{}").await;
    assert_eq!((ok.status, ok.header("content-type")), (200, Some("application/json")));

    // Invalid IDs: 200 with partial success, in JSON too.
    let partial = http::post(addr, "/v1/traces", proto, &with_invalid_ids().encode_to_vec()).await;
    assert_eq!(partial.status, 200);
    assert_eq!(
        ExportTraceServiceResponse::decode(partial.body.as_slice()).unwrap().partial_success.unwrap().rejected_spans,
        4
    );
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00000000000000000000000000000000","spanId":"0102030405060708"},{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708"}]}]}]}"#;
    let partial = http::post(addr, "/v1/traces", "application/json", json.as_bytes()).await;
    assert_eq!(partial.status, 200);
    assert_eq!(partial.json()["partialSuccess"]["rejectedSpans"], "1");

    // Undecodable: 400 with a google.rpc.Status body, in the request's encoding.
    let bad = http::post(addr, "/v1/traces", proto, &[0xff, 0xff, 0xff]).await;
    assert_eq!(bad.status, 400);
    let status = Status::decode(bad.body.as_slice()).unwrap();
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(status.message.contains("cannot decode"), "{}", status.message);
    let bad = http::post(addr, "/v1/traces", "application/json", b"{\"resourceSpans\": 7").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"].as_str().unwrap().contains("invalid JSON"));
    // Base64 IDs and enum names break the OTLP JSON rules.
    let base64 = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"AQIDBAUGBwgJCgsMDQ4PEA==","spanId":"AQIDBAUGBwg="}]}]}]}"#;
    assert_eq!(http::post(addr, "/v1/traces", "application/json", base64.as_bytes()).await.status, 400);

    // Over the limit: 413, uncompressed, and a small gzip body that inflates past it (a bomb: 50 MiB of zeros).
    let big = oversized().encode_to_vec();
    assert_eq!(http::post(addr, "/v1/traces", proto, &big).await.status, 413);
    let bomb = gzip(&vec![0u8; 50 << 20]);
    assert!(bomb.len() < 100 * 1024, "the bomb is small on the wire: {} bytes", bomb.len());
    let response =
        http::request(addr, "POST", "/v1/traces", &[("Content-Type", proto), ("Content-Encoding", "gzip")], &bomb)
            .await;
    assert_eq!(response.status, 413);
    assert!(Status::decode(response.body.as_slice()).unwrap().message.contains("larger than the limit"));

    // gzip that is well formed and within the limit is accepted; broken gzip is a 400.
    let compressed = gzip(&harness::trace_request(vec![valid(2)]).encode_to_vec());
    let response = http::request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", proto), ("Content-Encoding", "gzip")],
        &compressed,
    )
    .await;
    assert_eq!(response.status, 200);
    let response = http::request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", proto), ("Content-Encoding", "gzip")],
        b"not gzip",
    )
    .await;
    assert_eq!(response.status, 400);
    // zstd, the other encoding the README names: accepted, nothing rejected.
    let compressed = zstd_raw(&harness::trace_request(vec![valid(3)]).encode_to_vec());
    let response = http::request(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", proto), ("Content-Encoding", "zstd")],
        &compressed,
    )
    .await;
    assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    assert_eq!(ExportTraceServiceResponse::decode(response.body.as_slice()).unwrap().partial_success, None);
    let response =
        http::request(addr, "POST", "/v1/traces", &[("Content-Type", proto), ("Content-Encoding", "br")], b"x").await;
    assert_eq!(response.status, 415);

    // Wrong media type 415, unknown path 404, wrong method 405.
    assert_eq!(http::post(addr, "/v1/traces", "text/plain", b"hello").await.status, 415);
    assert_eq!(http::post(addr, "/v1/spans", proto, b"").await.status, 404);
    assert_eq!(http::request(addr, "GET", "/v1/traces", &[], b"").await.status, 405);

    gateway.stop().await;
}

/// Browsers may send OTLP/HTTP from the configured origins only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_only_configured_origins() {
    let mut ingest = harness::ingest_config();
    ingest.http.cors_allowed_origins = vec!["https://shop.example.com".to_owned()];
    let gateway = harness::start_gateway(ingest, harness::kafka_config(&harness::apache_kafka(), 2)).await;
    let preflight = |origin: &'static str| {
        let addr = gateway.http;
        async move {
            http::request(
                addr,
                "OPTIONS",
                "/v1/traces",
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "POST"),
                    ("Access-Control-Request-Headers", "content-type"),
                ],
                b"",
            )
            .await
        }
    };
    let allowed = preflight("https://shop.example.com").await;
    assert_eq!(allowed.header("access-control-allow-origin"), Some("https://shop.example.com"));
    let other = preflight("https://evil.example.com").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    gateway.stop().await;
}

/// A body that has not arrived whole when `ingest.read_timeout` passes is refused then: gRPC `DEADLINE_EXCEEDED`,
/// HTTP 408 (README, "What clients get"). Each request here sends its headers and half its body, and keeps the
/// stream open. Their share of the budget is given back and nothing of them is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_read_timeout_is_refused() {
    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tonic::codegen::Service as _;

    const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
    let mut ingest = harness::ingest_config();
    ingest.read_timeout = tailgate_config::Duration::from_secs(READ_TIMEOUT.as_secs());
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(ingest, kafka.clone()).await;

    // gRPC: a message prefix announcing the whole message, half of it, and then nothing.
    let message = harness::trace_request(vec![valid(1)]).encode_to_vec();
    let mut frame = vec![0];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message[..message.len() / 2]);
    let chunks = futures::stream::once(async move {
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(frame)))
    })
    .chain(futures::stream::pending());
    let request = tonic::codegen::http::Request::builder()
        .method("POST")
        .uri("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(http_body_util::StreamBody::new(chunks)))
        .unwrap();
    let mut channel = tonic::transport::Endpoint::from_shared(gateway.grpc_url()).unwrap().connect().await.unwrap();
    futures::future::poll_fn(|cx| channel.poll_ready(cx)).await.unwrap();
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), channel.call(request))
        .await
        .expect("a half-sent gRPC request was not answered within 10 s")
        .unwrap();
    let waited = started.elapsed();
    let status = tonic::Status::from_header_map(response.headers()).expect("a trailers-only gRPC answer");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("did not arrive within"), "{}", status.message());
    assert!(waited >= READ_TIMEOUT, "gRPC: refused after {waited:?}, before the read timeout");

    // HTTP: a Content-Length of the whole body, half of it, and then nothing.
    let body = harness::trace_request(vec![valid(2)]).encode_to_vec();
    let mut tcp = tokio::net::TcpStream::connect(gateway.http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        gateway.http,
        body.len()
    );
    // Before the first byte: the server's timer cannot have started earlier.
    let started = std::time::Instant::now();
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "a half-sent HTTP request was not answered within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(waited >= READ_TIMEOUT, "HTTP: refused after {waited:?}, before the read timeout");

    let budget = gateway.budget.clone();
    assert!(
        harness::eventually(std::time::Duration::from_secs(5), || budget.in_use() == 0).await,
        "refused requests return their share of the budget: {} bytes held",
        budget.in_use()
    );
    // A whole request after them is written; nothing of theirs is.
    let ok = http::post(
        gateway.http,
        "/v1/traces",
        "application/x-protobuf",
        &harness::trace_request(vec![valid(3)]).encode_to_vec(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let records =
        harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, std::time::Duration::from_secs(20), |r| {
            !harness::topic::trace_ids(r).is_empty()
        });
    let written: Vec<Vec<u8>> = harness::topic::trace_ids(&records).into_iter().collect();
    assert_eq!(written, [vec![3; 16]], "only the whole request is in Kafka");
    gateway.stop().await;
}

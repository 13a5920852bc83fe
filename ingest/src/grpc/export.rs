//! The OTLP `Export` methods as gRPC services that hand the handler the request's bytes, not a decoded message:
//! traces and logs are split on their wire format (`tailgate_proto::wire`), so decoding them into owned messages
//! first would be work thrown away. Responses are encoded with prost as usual.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use bytes::Buf;
use futures::future::BoxFuture;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::{Code, Status};

use crate::otlp::Otlp;

/// The gRPC service of one signal: `TraceService`, `MetricsService` or `LogsService`.
pub(crate) trait Method: Otlp {
    /// The full service name, as in the path `/<SERVICE>/Export`.
    const SERVICE: &'static str;
}

impl Method for opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}
impl Method for opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}
impl Method for opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
}

/// What serves one signal's requests, given their bytes.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    fn export<S: Method>(
        &self,
        request: tonic::Request<Vec<u8>>,
    ) -> BoxFuture<'static, Result<tonic::Response<S::Response>, Status>>;
}

/// Requests as bytes, responses as prost messages.
struct BytesCodec<R>(PhantomData<fn() -> R>);

impl<R: prost::Message + Send + 'static> Codec for BytesCodec<R> {
    type Encode = R;
    type Decode = Vec<u8>;
    type Encoder = ResponseEncoder<R>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut message = vec![0; src.remaining()];
        src.copy_to_slice(&mut message);
        Ok(Some(message))
    }
}

struct ResponseEncoder<R>(PhantomData<fn() -> R>);

impl<R: prost::Message> Encoder for ResponseEncoder<R> {
    type Item = R;
    type Error = Status;

    fn encode(&mut self, item: R, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst).map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
    }
}

/// `/<SERVICE>/Export` of signal `S`, served by `H`, with tonic's framing, compression and size limit.
pub(crate) struct ExportService<S, H> {
    handler: H,
    max_request_bytes: usize,
    signal: PhantomData<fn() -> S>,
}

impl<S, H: Clone> Clone for ExportService<S, H> {
    fn clone(&self) -> Self {
        ExportService { handler: self.handler.clone(), max_request_bytes: self.max_request_bytes, signal: PhantomData }
    }
}

impl<S: Method, H: Handler> ExportService<S, H> {
    pub(crate) fn new(handler: H, max_request_bytes: usize) -> Self {
        ExportService { handler, max_request_bytes, signal: PhantomData }
    }
}

impl<S: Method, H: Handler> NamedService for ExportService<S, H> {
    const NAME: &'static str = S::SERVICE;
}

/// The unary method tonic calls with the decoded (here: copied) message.
struct Unary<S, H>(H, PhantomData<fn() -> S>);

impl<S: Method, H: Handler> UnaryService<Vec<u8>> for Unary<S, H> {
    type Response = S::Response;
    type Future = BoxFuture<'static, Result<tonic::Response<S::Response>, Status>>;

    fn call(&mut self, request: tonic::Request<Vec<u8>>) -> Self::Future {
        self.0.export::<S>(request)
    }
}

impl<S, H, B> tower::Service<axum::http::Request<B>> for ExportService<S, H>
where
    S: Method,
    H: Handler,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        if request.uri().path().strip_prefix('/').and_then(|p| p.strip_prefix(S::SERVICE)) != Some("/Export") {
            return Box::pin(async { Ok(Status::new(Code::Unimplemented, "unknown method").into_http()) });
        }
        let unary = Unary::<S, H>(self.handler.clone(), PhantomData);
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            // The admission layer inflated what it could; these are what tonic still names when it refuses others.
            let mut grpc = tonic::server::Grpc::new(BytesCodec::<S::Response>(PhantomData))
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_request_bytes);
            Ok(grpc.unary(unary, request).await)
        })
    }
}

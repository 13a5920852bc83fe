//! OTLP/gRPC to the receiver's `TraceService/Export`, with the OTLP specification's table of which status codes
//! are retried.

use std::str::FromStr;
use std::time::Duration;

use bytes::BufMut;
use bytes::Bytes;
use futures::future::BoxFuture;
use hyper::http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use super::config::{Compression, JaegerConfig};
use crate::delivery::credentials::BackendAuth;
use crate::delivery::{Attempt, Tenant, Transport};

pub struct GrpcTransport {
    client: tonic::client::Grpc<Channel>,
    metadata: Vec<(MetadataKey<tonic::metadata::Ascii>, MetadataValue<tonic::metadata::Ascii>)>,
    auth: Option<BackendAuth>,
    timeout: Duration,
}

impl GrpcTransport {
    pub fn new(config: &JaegerConfig) -> Result<GrpcTransport, String> {
        let timeout = config.timeout.get();
        let mut endpoint = Endpoint::from_str(&config.endpoint)
            .map_err(|e| format!("`{}`: {e}", config.endpoint))?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if config.endpoint.starts_with("https://") {
            install_tls_provider();
            // The files were checked by `ClientTlsConfig::validate`; tonic builds its own rustls config from them.
            let read = |key: &str, path: &std::path::Path| {
                std::fs::read(path).map_err(|e| format!("tls.{key} {}: {e}", path.display()))
            };
            let mut tls = match &config.tls.ca_file {
                Some(path) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca_file", path)?)),
                None => ClientTlsConfig::new().with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
                tls = tls.identity(Identity::from_pem(read("cert_file", cert)?, read("key_file", key)?));
            }
            if let Some(name) = &config.tls.server_name_override {
                tls = tls.domain_name(name.clone());
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS: {e}"))?;
        }
        // grpc-go servers (Jaeger, the Collector, Tempo) answer a gzip request with a gzip response, whether or not
        // the client said it accepts one: without this, every export to them fails as UNIMPLEMENTED.
        let mut client = tonic::client::Grpc::new(endpoint.connect_lazy())
            .max_decoding_message_size(4 << 20)
            .accept_compressed(CompressionEncoding::Gzip);
        if config.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        let metadata = config
            .headers
            .iter()
            .map(|(k, v)| match (MetadataKey::from_str(&k.to_ascii_lowercase()), v.parse()) {
                (Ok(key), Ok(value)) => Ok((key, value)),
                _ => Err(format!("header `{k}`: not valid gRPC metadata")),
            })
            .collect::<Result<_, _>>()?;
        Ok(GrpcTransport { client, metadata, auth: config.auth.clone(), timeout })
    }

    async fn export(&self, body: Bytes, tenant: Tenant) -> Attempt {
        let mut request = tonic::Request::new(body);
        request.set_timeout(self.timeout);
        for (key, value) in &self.metadata {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        // Read for each request, so that a rotated credentials file is used from the next one on.
        if let Some(auth) = &self.auth {
            match auth.authorization().map(|value| MetadataValue::try_from(value.as_bytes())) {
                Ok(Ok(mut value)) => {
                    value.set_sensitive(true);
                    request.metadata_mut().insert("authorization", value);
                }
                Ok(Err(_)) => {
                    return Attempt::Retry { reason: "credentials are not gRPC metadata".into(), after: None }
                }
                Err(message) => {
                    return Attempt::Retry { reason: format!("cannot read the credentials: {message}"), after: None }
                }
            }
        }
        // Tempo's (and a multi-tenant Jaeger collector's) tenant, in place of a configured one.
        if let Some(tenant) = tenant {
            match tenant.parse() {
                Ok(value) => {
                    request.metadata_mut().insert("x-scope-orgid", value);
                }
                Err(_) => return Attempt::Rejected { reason: "invalid_tenant", message: "not gRPC metadata".into() },
            }
        }
        let mut client = self.client.clone();
        let call = async {
            client.ready().await.map_err(|e| tonic::Status::unavailable(format!("cannot reach backend: {e}")))?;
            client.unary(request, PathAndQuery::from_static(EXPORT_PATH), EncodedRequest).await
        };
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), call).await {
            Err(_) => Attempt::Retry { reason: "request timed out".into(), after: None },
            Ok(Ok(response)) => match response.into_inner().partial_success {
                Some(partial) if partial.rejected_spans > 0 || !partial.error_message.is_empty() => Attempt::Accepted {
                    rejected: partial.rejected_spans.max(0) as u64,
                    reason: "partial_success",
                    message: Some(partial.error_message),
                },
                _ => Attempt::Accepted { rejected: 0, reason: "", message: None },
            },
            Ok(Err(status)) => classify(&status),
        }
    }
}

impl Transport for GrpcTransport {
    fn send(&self, body: Bytes, tenant: Tenant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.export(body, tenant))
    }
}

/// Selects rustls's process-wide crypto provider. The dependency tree enables two (aws-lc-rs and ring), so rustls
/// can't pick one by itself; if another component installed one already, that one stays.
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The OTLP trace service's one method.
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends the batch's already-encoded `ExportTraceServiceRequest` as is (no decode and re-encode per attempt) and
/// decodes the response.
#[derive(Clone, Copy, Default)]
struct EncodedRequest;

impl Codec for EncodedRequest {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = EncodedRequest;
    type Decoder = EncodedRequest;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequest
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedRequest
    }
}

impl Encoder for EncodedRequest {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedRequest {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable response: {e}")))
    }
}

/// The OTLP specification's table of retryable gRPC codes, and what it leaves to judgement. A backend that cannot
/// take the request now is an outage (retried, `backend_up` 0), not bad data: `UNIMPLEMENTED` (an endpoint that
/// serves no OTLP trace export: Jaeger's old port, a wrong service), `RESOURCE_EXHAUSTED` without `RetryInfo`
/// (Tempo's rate limits send none), and `UNKNOWN`/`INTERNAL` made by the client from a broken connection (a
/// backend killed mid-request: the status carries the transport error as its source; a backend's own `INTERNAL`
/// does not). Only what says the data itself is bad is refused for good.
fn classify(status: &tonic::Status) -> Attempt {
    let after = retry_after(status);
    let reason = format!("gRPC {:?}: {}", status.code(), status.message());
    if tailgate_proto::retry::grpc_is_retryable(status.code() as i32, after.is_some()) {
        return Attempt::Retry { reason, after };
    }
    let broken_connection = std::error::Error::source(status).is_some();
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => Attempt::Unauthorized { message: reason },
        Code::Unimplemented => Attempt::Retry {
            reason: format!("{reason} — the endpoint does not serve OTLP trace export: check its port"),
            after,
        },
        Code::ResourceExhausted => Attempt::Retry { reason, after },
        Code::Unknown | Code::Internal if broken_connection => Attempt::Retry { reason, after },
        Code::InvalidArgument => Attempt::Rejected { reason: "invalid_argument", message: reason },
        _ => Attempt::Rejected { reason: "refused", message: reason },
    }
}

/// `google.rpc.RetryInfo` from the status details, if the server sent one.
fn retry_after(status: &tonic::Status) -> Option<Duration> {
    tailgate_proto::status::Status::decode(status.details()).ok()?.retry_delay()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(status: &tonic::Status) -> &'static str {
        match classify(status) {
            Attempt::Retry { .. } => "retry",
            Attempt::Unauthorized { .. } => "unauthorized",
            Attempt::Rejected { .. } => "rejected",
            other => panic!("{other:?}"),
        }
    }

    /// A misconfigured or restarting backend is an outage, not bad data: these dead-lettered whole batches.
    #[test]
    fn outages_are_retried_and_only_bad_data_is_refused() {
        assert_eq!(outcome(&tonic::Status::unimplemented("unknown service")), "retry", "Jaeger's old port");
        assert_eq!(outcome(&tonic::Status::resource_exhausted("rate limited")), "retry", "Tempo, no RetryInfo");
        let reset = tonic::Status::from_error(Box::new(std::io::Error::other("connection reset by peer")));
        assert_eq!(reset.code(), Code::Unknown);
        assert_eq!(outcome(&reset), "retry", "a connection broken mid-request");
        assert_eq!(outcome(&tonic::Status::unavailable("restarting")), "retry");
        assert_eq!(outcome(&tonic::Status::internal("the backend's own failure")), "rejected");
        assert_eq!(outcome(&tonic::Status::invalid_argument("bad span")), "rejected");
        assert_eq!(outcome(&tonic::Status::unauthenticated("no token")), "unauthorized");
    }
}

//! POSTing compressed protobuf over HTTP/1.1, or HTTPS: the transport of Prometheus remote-write, Loki push and
//! OTLP/HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use hyper_rustls::HttpsConnector;

use super::credentials::BackendAuth;
use super::transport::{Attempt, Tenant, Transport};
use super::Delivery;

/// What a 4xx (other than 429) meant.
pub enum Refusal {
    /// The request was refused as a whole: its records go to the dead-letter topic.
    Whole(&'static str),
    /// Some items were refused and the rest stored (Loki stores every valid entry before answering 400): counted
    /// with this reason (`refused` of them, as many as the backend said, else 1), not retried, not dead-lettered.
    Some { reason: &'static str, refused: u64 },
    /// Some items were refused and, because of them, nothing was stored (Prometheus rolls back the whole request):
    /// the request is cut and sent again in parts ([`Attempt::Split`]).
    Split(&'static str),
}

/// Reads a refusal's status and body.
pub type Classify = fn(StatusCode, &str) -> Refusal;

/// Cuts a request body in two for [`Refusal::Split`] (see [`Transport::split`]).
pub type Split = fn(&Bytes) -> Option<[(Bytes, u64); 2]>;

/// What a body is, in the headers that say so.
pub type BodyHeaders = &'static [(&'static str, &'static str)];

/// Prometheus remote-write 1.0: snappy-compressed protobuf.
pub const REMOTE_WRITE: BodyHeaders = &[("content-encoding", "snappy"), ("x-prometheus-remote-write-version", "0.1.0")];
/// Loki's push API: snappy-compressed protobuf.
pub const SNAPPY: BodyHeaders = &[("content-encoding", "snappy")];
/// OTLP/HTTP: gzip-compressed protobuf.
pub const GZIP: BodyHeaders = &[("content-encoding", "gzip")];

pub struct HttpTransport {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    body: BodyHeaders,
    /// Read for every request, so a rotated secret is used from the next one on.
    auth: Option<BackendAuth>,
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    classify: Classify,
    split: Option<Split>,
    /// Where each batch's tenant goes.
    tenant_header: Option<HeaderName>,
    /// For an OTLP/HTTP backend: reads a 2xx body's `partial_success` (items refused, the backend's message).
    partial_success: Option<PartialSuccess>,
}

/// Reads the items an accepted OTLP response refused, and why; `None` when it refused none.
pub type PartialSuccess = fn(&[u8]) -> Option<(u64, String)>;

impl HttpTransport {
    /// `headers` were validated with the config; an invalid one is an error here too, never skipped.
    pub fn new(
        delivery: &Delivery,
        endpoint: &str,
        body: BodyHeaders,
        classify: Classify,
    ) -> Result<HttpTransport, String> {
        let timeout = delivery.timeout.get();
        let headers = delivery.headers.clone();
        let uri: Uri = endpoint.parse().map_err(|e| format!("`{endpoint}`: {e}"))?;
        let headers = headers
            .into_iter()
            .map(|(k, v)| match (k.parse::<HeaderName>(), v.parse::<HeaderValue>()) {
                (Ok(name), Ok(value)) if super::settings::is_header_value(&v) => Ok((name, value)),
                _ => Err(format!("header `{k}`: not a valid HTTP header")),
            })
            .collect::<Result<_, _>>()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        // https:// endpoints speak TLS with `tls`: its CA (or the system's), client certificate and server name.
        let tls = delivery.tls.load(&[]).map_err(|error| format!("tls.{}: {error}", error.key))?;
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(Arc::unwrap_or_clone(tls.config));
        let builder = match &tls.server_name_override {
            Some(name) => {
                let name = rustls_pki_types::ServerName::try_from(name.clone())
                    .map_err(|_| format!("tls.server_name_override: `{name}` is not a DNS name or IP"))?;
                builder.https_or_http().with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder.https_or_http(),
        };
        let connector = builder.enable_http1().wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(HttpTransport {
            client,
            body,
            auth: delivery.auth.clone(),
            uri,
            headers,
            timeout,
            classify,
            split: None,
            tenant_header: None,
            partial_success: None,
        })
    }

    /// Sends each batch's tenant in `name` (`X-Scope-OrgID`), in place of a configured header of that name.
    pub fn with_tenant_header(self, name: &str) -> Result<HttpTransport, String> {
        let name = HeaderName::try_from(name).map_err(|_| format!("`{name}` is not an HTTP header name"))?;
        Ok(HttpTransport { tenant_header: Some(name), ..self })
    }

    /// An OTLP/HTTP backend: `partial_success` in accepted responses is read, and 5xx follow the specification.
    pub fn with_partial_success(self, read: PartialSuccess) -> HttpTransport {
        HttpTransport { partial_success: Some(read), ..self }
    }

    /// How to cut a body the backend refused as a whole for some of its items.
    pub fn with_split(self, split: Split) -> HttpTransport {
        HttpTransport { split: Some(split), ..self }
    }

    async fn post(&self, body: Bytes, tenant: Tenant) -> Attempt {
        let mut request = Request::post(self.uri.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(hyper::header::USER_AGENT, concat!("tailgate/", env!("CARGO_PKG_VERSION")));
        for (name, value) in self.body {
            request = request.header(*name, *value);
        }
        let tenant = match (&self.tenant_header, tenant.as_deref()) {
            (Some(name), Some(tenant)) => match HeaderValue::from_str(tenant) {
                Ok(value) => Some((name, value)),
                Err(_) => return Attempt::Rejected { reason: "invalid_tenant", message: "not a header value".into() },
            },
            _ => None,
        };
        for (name, value) in &self.headers {
            if tenant.as_ref().is_none_or(|(tenant_header, _)| *tenant_header != name) {
                request = request.header(name, value);
            }
        }
        if let Some((name, value)) = tenant {
            request = request.header(name, value);
        }
        if let Some(auth) = &self.auth {
            match auth.authorization() {
                Ok(value) => request = request.header(hyper::header::AUTHORIZATION, value),
                // The file is being replaced, or gone: an outage of our own making, retried, never sent without.
                Err(message) => {
                    return Attempt::Retry { reason: format!("cannot read the credentials: {message}"), after: None }
                }
            }
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(error) => return Attempt::Rejected { reason: "invalid_request", message: error.to_string() },
        };
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => return Attempt::Retry { reason: "request timed out".into(), after: None },
            Ok(Err(error)) => return Attempt::Retry { reason: format!("cannot reach backend: {error}"), after: None },
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        // The body is read to explain refusals, and at most MAX_RESPONSE_BYTES of it: a backend (or whatever answers
        // in its place) cannot make the exporter hold more. A longer one costs the connection, not memory.
        let body = match tokio::time::timeout(self.timeout, read_capped(response.into_body())).await {
            Ok(body) => body,
            Err(_) => Bytes::new(),
        };
        self.answer(status, &body, after)
    }

    /// What an answer means. A backend that cannot take the request *now* — overloaded, restarting, or reached at
    /// the wrong URL (a redirect, 404, 405: a Prometheus without its remote-write receiver, a proxy's path) — is an
    /// outage: retried, `backend_up` 0, logged, the records kept in Kafka until it is fixed. Only what says the
    /// data itself is bad goes to the dead-letter topic. A body too large (413) is cut in two where this transport
    /// can cut its bodies. For OTLP/HTTP the specification's table applies to 5xx: 500 and 501 are permanent.
    fn answer(&self, status: StatusCode, body: &[u8], after: Option<Duration>) -> Attempt {
        let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).trim().to_owned();
        let message = format!("HTTP {status}: {text}");
        let code = status.as_u16();
        if status.is_success() {
            return match self.partial_success.and_then(|read| read(body)) {
                Some((rejected, message)) => {
                    Attempt::Accepted { rejected, reason: "partial_success", message: Some(message) }
                }
                None => Attempt::Accepted { rejected: 0, reason: "", message: None },
            };
        }
        match code {
            401 | 403 => Attempt::Unauthorized { message },
            408 | 429 => Attempt::Retry { reason: message, after },
            500..=599 if self.partial_success.is_some() && !tailgate_proto::retry::http_is_retryable(code) => {
                Attempt::Rejected { reason: "server_error", message }
            }
            500..=599 => Attempt::Retry { reason: message, after },
            300..=399 | 404 | 405 => Attempt::Retry {
                reason: format!("{message} — the endpoint {} does not take this request here: check its URL", self.uri),
                after,
            },
            413 if self.split.is_some() => Attempt::Split { reason: "too_large", message },
            413 => Attempt::Rejected { reason: "too_large", message },
            _ => match (self.classify)(status, &text) {
                Refusal::Whole(reason) => Attempt::Rejected { reason, message },
                Refusal::Some { reason, refused } => {
                    Attempt::Accepted { rejected: refused.max(1), reason, message: Some(message) }
                }
                Refusal::Split(reason) => Attempt::Split { reason, message },
            },
        }
    }
}

/// What is read of a response body at most.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// The first [`MAX_RESPONSE_BYTES`] of `body`; the rest is not read.
async fn read_capped(mut body: hyper::body::Incoming) -> Bytes {
    let mut out = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let room = MAX_RESPONSE_BYTES - out.len();
            out.extend_from_slice(&data[..data.len().min(room)]);
            if out.len() == MAX_RESPONSE_BYTES {
                break;
            }
        }
    }
    Bytes::from(out)
}

impl Transport for HttpTransport {
    fn send(&self, body: Bytes, tenant: Tenant) -> BoxFuture<'_, Attempt> {
        Box::pin(self.post(body, tenant))
    }

    fn split(&self, body: &Bytes) -> Option<[(Bytes, u64); 2]> {
        self.split.and_then(|split| split(body))
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for APIs and read as absent).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `raw` gzip-compressed, as OTLP/HTTP receivers take it.
pub fn gzip(raw: Vec<u8>) -> Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(&raw);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Snappy block format, as remote-write and Loki expect (not the framed stream format).
pub fn snappy(raw: &[u8]) -> Bytes {
    // Compression of an in-memory buffer fails only for inputs over 4GiB, which batches never reach.
    Bytes::from(snap::raw::Encoder::new().compress_vec(raw).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_request(_: StatusCode, _: &str) -> Refusal {
        Refusal::Whole("bad_request")
    }

    fn halves(_: &Bytes) -> Option<[(Bytes, u64); 2]> {
        None
    }

    fn outcome(transport: &HttpTransport, status: u16, body: &[u8]) -> String {
        match transport.answer(StatusCode::from_u16(status).unwrap(), body, None) {
            Attempt::Accepted { rejected, reason, .. } => format!("accepted {rejected} {reason}").trim().to_owned(),
            Attempt::Retry { .. } => "retry".into(),
            Attempt::Unauthorized { .. } => "unauthorized".into(),
            Attempt::Rejected { reason, .. } => format!("rejected {reason}"),
            Attempt::Split { reason, .. } => format!("split {reason}"),
        }
    }

    /// Every status other than 2xx/401/403/429/5xx dead-lettered the whole batch: a Prometheus without the
    /// remote-write receiver (404), a redirect, 405/408/413. A misconfigured endpoint is an outage now (retried,
    /// backend_up 0), a 413 is cut in two where the body can be, and OTLP/HTTP follows its specification.
    #[test]
    fn a_misconfigured_endpoint_is_an_outage_and_only_bad_data_is_refused() {
        let transport =
            HttpTransport::new(&Delivery::default(), "http://backend:9090/api/v1/write", SNAPPY, bad_request).unwrap();
        for (status, expected) in [
            (200, "accepted 0"),
            (301, "retry"),
            (404, "retry"),
            (405, "retry"),
            (408, "retry"),
            (429, "retry"),
            (500, "retry"),
            (503, "retry"),
            (401, "unauthorized"),
            (413, "rejected too_large"),
            (400, "rejected bad_request"),
        ] {
            assert_eq!(outcome(&transport, status, b""), expected, "HTTP {status}");
        }
        let splits = transport.with_split(halves);
        assert_eq!(outcome(&splits, 413, b""), "split too_large");

        // OTLP/HTTP: 500 and 501 are permanent by the specification, and a 2xx may refuse some items.
        fn refused_two(body: &[u8]) -> Option<(u64, String)> {
            (body == b"two").then(|| (2, "two refused".to_owned()))
        }
        let otlp = HttpTransport::new(&Delivery::default(), "http://loki:3100/otlp/v1/logs", GZIP, bad_request)
            .unwrap()
            .with_partial_success(refused_two);
        assert_eq!(outcome(&otlp, 500, b""), "rejected server_error");
        assert_eq!(outcome(&otlp, 501, b""), "rejected server_error");
        assert_eq!(outcome(&otlp, 502, b""), "retry");
        assert_eq!(outcome(&otlp, 200, b"two"), "accepted 2 partial_success");
    }
}

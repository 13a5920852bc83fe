//! A minimal HTTP/1.1 client: enough to send OTLP/HTTP and see the exact status, headers and body.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

pub async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body).await.unwrap_or_else(|e| panic!("{method} {addr}{path}: {e}"))
}

/// [`request`], with a connection that fails or is reset (a process starting or going away) as an error.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    Ok(parse(&exchange(addr, &raw).await?))
}

/// [`try_request`] over TLS with `tls` (for `localhost`). A handshake the server refuses is an error, and so is a
/// connection it closes without answering (TLS 1.3 reports a refused client certificate only after the client's
/// side of the handshake is done).
pub async fn tls_request(
    addr: SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
    stream.write_all(&raw).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    if out.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "closed without an answer"));
    }
    Ok(parse(&out))
}

pub async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Response {
    request(addr, "POST", path, &[("Content-Type", content_type)], body).await
}

/// Sends `request` on a new connection and reads the whole response (the request says `Connection: close`).
async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(out)
}

fn parse(raw: &[u8]) -> Response {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response { status, headers, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(String::from_utf8_lossy(&raw[..end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// The series of the Prometheus text page `GET {addr}/metrics` serves — each `name{labels}` and its value — or none
/// if it does not answer within 2 s.
pub async fn metrics(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let Ok(Ok(response)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), try_request(addr, "GET", "/metrics", &[], b"")).await
    else {
        return std::collections::BTreeMap::new();
    };
    String::from_utf8(response.body)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The sum of the series of `family` in `series` (a `/metrics` page, as [`metrics`] reads it) that carry every one
/// of `labels` (`signal="traces"`): a family's series are split by labels a test may not care about.
pub fn total(series: &std::collections::BTreeMap<String, f64>, family: &str, labels: &[&str]) -> f64 {
    series
        .iter()
        .filter(|(name, _)| in_family(name, family) && labels.iter().all(|label| name.contains(label)))
        .map(|(_, value)| value)
        .sum()
}

/// Whether `series` (`name{labels}` or `name`) is of metric `family`.
pub fn in_family(series: &str, family: &str) -> bool {
    series.strip_prefix(family).is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
}

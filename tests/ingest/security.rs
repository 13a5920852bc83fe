//! TLS, mutual TLS and authentication on the receivers, and the tenant each request is written as: what is
//! refused never reaches Kafka, and what is accepted carries its tenant on every record.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tailgate_config::{ByteSize, Duration as ConfigDuration, SecretSource};
use tailgate_ingest::{AuthConfig, BearerToken, JwtConfig, RateLimitConfig};
use tailgate_proto::headers;
use tailgate_tls::ServerTlsConfig;

use crate::harness::certs::{self, Pki};
use crate::harness::{self, http, topic, Record};

const PROTOBUF: &str = "application/x-protobuf";

/// One span of its own trace `n`, so that each request can be found (or not) in Kafka.
fn one_span(n: u64, padding: usize) -> ExportTraceServiceRequest {
    let mut trace_id = vec![0xab; 8];
    trace_id.extend(n.to_be_bytes());
    let mut span = Span { trace_id, span_id: vec![1; 8], name: "checkout".into(), ..Default::default() };
    if padding > 0 {
        span.attributes.push(KeyValue {
            key: "padding".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("x".repeat(padding))) }),
        });
    }
    harness::trace_request(vec![span])
}

/// The tenant header of the record holding each trace, by the trace's number.
fn tenants_by_trace(records: &[Record]) -> Vec<(u64, Option<String>)> {
    let mut found: Vec<(u64, Option<String>)> = records
        .iter()
        .flat_map(|record| {
            topic::spans(std::slice::from_ref(record)).into_iter().map(move |(_, span)| {
                let n = u64::from_be_bytes(span.trace_id[8..].try_into().unwrap());
                (n, record.header(headers::TENANT))
            })
        })
        .collect();
    found.sort();
    found
}

/// The TLS error that refused a request — not any failure: a refusal for another reason (a closed port, a timeout)
/// must not pass for the TLS one.
fn tls_refusal(result: std::io::Result<http::Response>) -> rustls::Error {
    let error = result.err().expect("refused");
    let tls = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
    tls.unwrap_or_else(|| panic!("refused, but not by TLS: {error:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_only_clients_of_its_ca_and_follows_rotated_certificates() {
    let pki = Pki::new("mtls");
    let (ca, other_ca, next_ca) = (pki.ca("ca"), pki.ca("other-ca"), pki.ca("next-ca"));
    let server = pki.leaf(&ca, "server");
    let client = pki.leaf(&ca, "client");
    let stranger = pki.leaf(&other_ca, "stranger");
    let mut config = harness::ingest_config();
    config.http.tls = Some(ServerTlsConfig {
        cert_file: server.cert.clone(),
        key_file: server.key.clone(),
        client_ca_file: Some(ca.cert.clone()),
        min_version: Default::default(),
        reload_interval: ConfigDuration::from_millis(100),
    });
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(config, kafka.clone()).await;
    let send = |tls: Arc<rustls::ClientConfig>, n: u64| {
        let addr = gateway.http;
        async move {
            http::tls_request(
                addr,
                tls,
                "POST",
                "/v1/traces",
                &[("Content-Type", PROTOBUF)],
                &one_span(n, 0).encode_to_vec(),
            )
            .await
        }
    };

    // A client of the CA is served.
    let accepted = send(certs::client_config(&ca.cert, Some(&client)), 1).await.expect("an mTLS client is served");
    assert_eq!(accepted.status, 200);
    // No client certificate, one from another CA, and plaintext: refused by TLS, nothing written.
    let refused = tls_refusal(send(certs::client_config(&ca.cert, None), 2).await);
    assert!(
        matches!(refused, rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired)),
        "without a client certificate: {refused:?}"
    );
    let refused = tls_refusal(send(certs::client_config(&ca.cert, Some(&stranger)), 3).await);
    assert!(
        matches!(refused, rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)),
        "a certificate of another CA: {refused:?}"
    );
    let plaintext = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gateway.http).await?;
        tcp.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").await?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.map(|_| answer)
    };
    let plaintext: std::io::Result<Vec<u8>> = plaintext.await;
    assert!(!plaintext.is_ok_and(|answer| answer.starts_with(b"HTTP/")), "plaintext HTTP was answered");

    // Rotation: the server's files are replaced by a certificate of another CA. New handshakes use it once the
    // gateway has read it; until then, and after, the old trust does not verify it.
    let rotated = pki.leaf(&next_ca, "server-next");
    std::fs::copy(&rotated.key, &server.key).unwrap();
    std::fs::copy(&rotated.cert, &server.cert).unwrap();
    let trusts_next = certs::client_config(&next_ca.cert, Some(&client));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while http::tls_request(gateway.http, Arc::clone(&trusts_next), "POST", "/", &[], b"").await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the rotated certificate was never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(trusts_next.clone(), 4).await.unwrap().status, 200);
    let refused = tls_refusal(send(certs::client_config(&ca.cert, Some(&client)), 5).await);
    assert!(
        matches!(refused, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        "the old trust verifies the rotated certificate: {refused:?}"
    );

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |records| {
        tenants_by_trace(records).len() >= 2
    });
    let traces: Vec<u64> = tenants_by_trace(&records).into_iter().map(|(n, _)| n).collect();
    assert_eq!(traces, [1, 4], "exactly the requests of trusted clients were written");
    gateway.stop().await;
}

/// A JWT issuer: an RSA key made by openssl, and the JWKS publishing it.
struct Issuer {
    key: jsonwebtoken::EncodingKey,
    jwks: std::path::PathBuf,
}

impl Issuer {
    fn new(pki: &Pki, name: &str) -> Issuer {
        let key = pki.dir.join(format!("{name}.rsa"));
        let run = |args: &[&str]| {
            let output = std::process::Command::new("openssl").args(args).output().unwrap();
            assert!(output.status.success(), "openssl {args:?}");
            output.stdout
        };
        run(&["genrsa", "-out", key.to_str().unwrap(), "2048"]);
        let modulus = String::from_utf8(run(&["rsa", "-in", key.to_str().unwrap(), "-noout", "-modulus"])).unwrap();
        let modulus = hex::decode(modulus.trim().trim_start_matches("Modulus=")).unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwks = pki.dir.join(format!("{name}.jwks.json"));
        let document = serde_json::json!({ "keys": [
            { "kty": "RSA", "kid": "k1", "alg": "RS256", "use": "sig", "n": b64.encode(modulus), "e": "AQAB" }
        ]});
        std::fs::write(&jwks, document.to_string()).unwrap();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&key).unwrap()).unwrap();
        Issuer { key, jwks }
    }

    fn token(&self, audience: &str, expires_in: i64, tenant: &str) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let claims = serde_json::json!({
            "iss": "https://auth.shop.example", "aud": audience, "exp": now + expires_in, "tenant": tenant,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
    }
}

fn auth(pki: &Pki, issuer: &Issuer) -> AuthConfig {
    let token = pki.dir.join("payments.token");
    std::fs::write(&token, "payments-s3cr3t\n").unwrap();
    AuthConfig {
        bearer_tokens: vec![BearerToken {
            tenant: "payments".into(),
            token: SecretSource { file: Some(token), env: None },
        }],
        jwt: Some(JwtConfig {
            jwks_file: issuer.jwks.clone(),
            issuer: "https://auth.shop.example".into(),
            audience: "tailgate".into(),
            tenant_claim: "tenant".into(),
            leeway: ConfigDuration::from_secs(60),
        }),
        reload_interval: ConfigDuration::from_secs(10),
    }
}

/// (case, Authorization, extra header, the tenant it is written as, or the RFC 6750 error it gets)
type AuthCase =
    (&'static str, Option<String>, Option<(&'static str, &'static str)>, Result<&'static str, Option<&'static str>>);

/// Every credential case over both transports: none, a wrong token, an expired JWT, a JWT for another audience,
/// a JWT signed by another key, then the right static token, the right JWT, and the right token with a header
/// claiming another tenant. Only the last three are written, each as the tenant of its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_authenticated_requests_are_written_each_as_its_credentials_tenant() {
    let pki = Pki::new("auth");
    let issuer = Issuer::new(&pki, "issuer");
    let impostor = Issuer::new(&pki, "impostor");
    let mut config = harness::ingest_config();
    config.grpc.auth = Some(auth(&pki, &issuer));
    config.http.auth = Some(auth(&pki, &issuer));
    let kafka = harness::kafka_config(&harness::apache_kafka(), 2);
    let gateway = harness::start_gateway(config, kafka.clone()).await;

    let bearer = |token: String| format!("Bearer {token}");
    let cases: Vec<AuthCase> = vec![
        ("none", None, None, Err(None)),
        ("wrong token", Some(bearer("guess".into())), None, Err(Some("invalid_token"))),
        ("basic auth", Some("Basic cGF5bWVudHM6eA==".into()), None, Err(Some("invalid_request"))),
        ("expired JWT", Some(bearer(issuer.token("tailgate", -3600, "cart"))), None, Err(Some("invalid_token"))),
        ("other audience", Some(bearer(issuer.token("grafana", 600, "cart"))), None, Err(Some("invalid_token"))),
        ("other key", Some(bearer(impostor.token("tailgate", 600, "cart"))), None, Err(Some("invalid_token"))),
        ("static token", Some(bearer("payments-s3cr3t".into())), None, Ok("payments")),
        ("JWT", Some(bearer(issuer.token("tailgate", 600, "cart"))), None, Ok("cart")),
        ("spoofed tenant", Some(bearer("payments-s3cr3t".into())), Some(("X-Scope-OrgID", "cart")), Ok("payments")),
    ];
    let mut grpc = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let mut expected = Vec::new();
    for (i, (case, authorization, extra, outcome)) in cases.iter().enumerate() {
        // HTTP: trace 100 + i.
        let mut headers = vec![("Content-Type", PROTOBUF)];
        if let Some(value) = authorization {
            headers.push(("Authorization", value.as_str()));
        }
        headers.extend(extra.iter().copied());
        let n = 100 + i as u64;
        let response =
            http::request(gateway.http, "POST", "/v1/traces", &headers, &one_span(n, 0).encode_to_vec()).await;
        match outcome {
            Ok(tenant) => {
                assert_eq!(response.status, 200, "{case} over HTTP");
                expected.push((n, Some(tenant.to_string())));
            }
            Err(error) => {
                assert_eq!(response.status, 401, "{case} over HTTP");
                let challenge = response.header("www-authenticate").unwrap_or_else(|| panic!("{case}: no challenge"));
                assert!(challenge.starts_with("Bearer realm=\"tailgate\""), "{case}: {challenge}");
                match error {
                    Some(error) => assert!(challenge.contains(&format!("error=\"{error}\"")), "{case}: {challenge}"),
                    None => assert!(!challenge.contains("error="), "{case}: {challenge}"),
                }
            }
        }
        // gRPC: trace 200 + i.
        let n = 200 + i as u64;
        let mut request = tonic::Request::new(one_span(n, 0));
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        if let Some((name, value)) = extra {
            request.metadata_mut().insert(
                name.to_ascii_lowercase().parse::<tonic::metadata::MetadataKey<_>>().unwrap(),
                value.parse().unwrap(),
            );
        }
        match (outcome, grpc.export(request).await) {
            (Ok(tenant), Ok(_)) => expected.push((n, Some(tenant.to_string()))),
            (Err(_), Err(status)) => assert_eq!(status.code(), tonic::Code::Unauthenticated, "{case} over gRPC"),
            (_, answer) => panic!("{case} over gRPC: {answer:?}"),
        }
    }

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 2, Duration::from_secs(20), |records| {
        tenants_by_trace(records).len() >= expected.len()
    });
    expected.sort();
    assert_eq!(tenants_by_trace(&records), expected, "what is written, and as whom");
    gateway.stop().await;
}

/// Without auth, a listener told to trust a tenant header writes each request as the tenant it names; a value
/// no backend would accept as a tenant is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_tenant_header_names_the_tenant_only_where_configured() {
    let mut config = harness::ingest_config();
    config.http.tenant_header = Some("X-Scope-OrgID".into());
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(config, kafka.clone()).await;
    let post = |n: u64, tenant: Option<&'static str>| {
        let addr = gateway.http;
        async move {
            let mut headers = vec![("Content-Type", PROTOBUF)];
            headers.extend(tenant.map(|t| ("X-Scope-OrgID", t)));
            http::request(addr, "POST", "/v1/traces", &headers, &one_span(n, 0).encode_to_vec()).await.status
        }
    };
    assert_eq!(post(1, Some("cart")).await, 200);
    assert_eq!(post(2, None).await, 200);
    assert_eq!(post(3, Some("../etc")).await, 400);
    // The gRPC listener was not told to trust it.
    let mut grpc = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(one_span(4, 0));
    request.metadata_mut().insert("x-scope-orgid", "cart".parse().unwrap());
    grpc.export(request).await.unwrap();

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |r| {
        tenants_by_trace(r).len() >= 3
    });
    assert_eq!(tenants_by_trace(&records), [(1, Some("cart".into())), (2, None), (4, None)]);
    gateway.stop().await;
}

/// A tenant past its burst is refused, retryably and saying when to come back, over both transports; another
/// tenant is not affected; nothing refused is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_held_to_its_own_rate_limit() {
    const BURST: u64 = 64 * 1024;
    const RATE: u64 = 1024;
    let mut config = harness::ingest_config();
    config.max_request_bytes = ByteSize::b(BURST);
    config.rate_limit = Some(RateLimitConfig {
        bytes_per_second: ByteSize::b(RATE),
        burst_bytes: ByteSize::b(BURST),
        tenants: Default::default(),
    });
    config.http.tenant_header = Some("X-Scope-OrgID".into());
    config.grpc.tenant_header = Some("X-Scope-OrgID".into());
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(config, kafka.clone()).await;
    let size = one_span(1, 20_000).encoded_len() as u64;
    let fits = BURST / size;
    assert_eq!(fits, 3, "the test's requests are sized for three to fit the burst");
    let post = |n: u64, tenant: &'static str| {
        let addr = gateway.http;
        async move {
            let headers = [("Content-Type", PROTOBUF), ("X-Scope-OrgID", tenant)];
            http::request(addr, "POST", "/v1/traces", &headers, &one_span(n, 20_000).encode_to_vec()).await
        }
    };
    let started = std::time::Instant::now();
    for n in 1..=fits {
        assert_eq!(post(n, "cart").await.status, 200, "request {n} of cart fits the burst");
    }
    let refused = post(10, "cart").await;
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(refused.status, 429);
    // Retry-After is what is missing at RATE, rounded up; the bucket refilled for at most `elapsed` meanwhile.
    let missing = (size - (BURST - fits * size)) as f64;
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    let (least, most) =
        (((missing - elapsed * RATE as f64) / RATE as f64).ceil() as u64, (missing / RATE as f64).ceil() as u64);
    assert!((least..=most).contains(&wait), "Retry-After {wait}, expected {least}..={most}");
    assert_eq!(post(20, "payments").await.status, 200, "another tenant has its own bucket");

    let mut grpc = TraceServiceClient::connect(gateway.grpc_url()).await.unwrap();
    let mut request = tonic::Request::new(one_span(30, 20_000));
    request.metadata_mut().insert("x-scope-orgid", "cart".parse().unwrap());
    let status = grpc.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let details = tailgate_proto::status::Status::decode(status.details()).unwrap();
    assert!(details.retry_delay().is_some(), "RESOURCE_EXHAUSTED carries RetryInfo, so clients retry");

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |r| {
        tenants_by_trace(r).len() >= 4
    });
    let cart = Some("cart".to_owned());
    assert_eq!(
        tenants_by_trace(&records),
        [(1, cart.clone()), (2, cart.clone()), (3, cart), (20, Some("payments".into()))]
    );
    gateway.stop().await;
}

/// The OpenTelemetry Python SDK, configured as a user would (its own environment variables), sends over gRPC
/// with mutual TLS and a bearer token; every span it exported is in Kafka as the token's tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_over_mtls_with_a_bearer_token() {
    let pki = Pki::new("sdk-mtls");
    let ca = pki.ca("ca");
    let (server, client) = (pki.leaf(&ca, "server"), pki.leaf(&ca, "client"));
    let issuer = Issuer::new(&pki, "issuer");
    let mut config = harness::ingest_config();
    config.grpc.tls = Some(ServerTlsConfig {
        cert_file: server.cert.clone(),
        key_file: server.key.clone(),
        client_ca_file: Some(ca.cert.clone()),
        min_version: Default::default(),
        reload_interval: ConfigDuration::from_secs(10),
    });
    config.grpc.auth = Some(auth(&pki, &issuer));
    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let gateway = harness::start_gateway(config, kafka.clone()).await;
    let endpoint = format!("https://localhost:{}", gateway.grpc.port());
    let (ca_file, cert, key) = (ca.cert.clone(), client.cert.clone(), client.key.clone());
    let output = tokio::task::spawn_blocking(move || {
        harness::python()
            .args([&harness::python_script("send_otlp.py"), "grpc", &endpoint, "5", "3"])
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", ca_file)
            .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert)
            .env("OTEL_EXPORTER_OTLP_CLIENT_KEY", key)
            .env("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer payments-s3cr3t")
            .output()
    })
    .await
    .unwrap()
    .expect("python runs; tests/run.sh installs the OpenTelemetry SDK");
    assert!(output.status.success(), "SDK export failed: {}", String::from_utf8_lossy(&output.stderr));
    let sent: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(sent["spans"].as_array().unwrap().len(), 15);
    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |r| {
        topic::spans(r).len() >= 15
    });
    assert_eq!(topic::spans(&records).len(), 15);
    assert!(records.iter().all(|r| r.header(headers::TENANT).as_deref() == Some("payments")));
    gateway.stop().await;
}

/// `client_ca_file` rotates as the server's files do (SECURITY.md, "Rotating certificates and tokens"), on the
/// binary as an operator runs it: a client of the new CA is refused until the gateway has read the new file and
/// served after, a client of the old CA served before and refused after. A file that does not load (not PEM), then
/// one that cannot be read (deleted), each keeps the CA loaded before and is counted once as
/// `tailgate_tls_reloads_total{outcome="failure"}`; a good file after them loads again. Every refused handshake is
/// counted in `tailgate_tls_handshake_failures_total`, and Kafka holds exactly the requests that were served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_is_followed_and_a_failed_reload_keeps_the_one_before() {
    use crate::harness::processes::{local_addr, Process, Ready};
    const RELOADS: &str = "tailgate_tls_reloads_total";
    const HANDSHAKE_FAILURES: &str = "tailgate_tls_handshake_failures_total";

    let pki = Pki::new("client-ca-rotation");
    let (ca, next_ca) = (pki.ca("ca"), pki.ca("next-ca"));
    let server = pki.leaf(&ca, "server");
    let old_client = certs::client_config(&ca.cert, Some(&pki.leaf(&ca, "old-client")));
    let new_client = certs::client_config(&ca.cert, Some(&pki.leaf(&next_ca, "new-client")));
    // Replaced as SECURITY.md says to: written beside it, renamed over it.
    let clients = pki.dir.join("clients.pem");
    let replace = |content: &[u8]| {
        let next = pki.dir.join("clients.pem.next");
        std::fs::write(&next, content).unwrap();
        std::fs::rename(&next, &clients).unwrap();
    };
    let (old_pem, new_pem) = (std::fs::read(&ca.cert).unwrap(), std::fs::read(&next_ca.cert).unwrap());
    replace(&old_pem);

    let kafka = harness::kafka_config(&harness::apache_kafka(), 1);
    let (addr, telemetry) = (local_addr(), local_addr());
    let config = format!(
        "{}ingest:\n  grpc: {{ endpoint: '{}' }}\n  http:\n    endpoint: '{addr}'\n    tls: {{ cert_file: '{}', \
         key_file: '{}', client_ca_file: '{}', reload_interval: 100ms }}\ntelemetry: {{ metrics: {{ endpoint: \
         '{telemetry}' }} }}\n",
        harness::kafka::kafka_yaml(&kafka),
        local_addr(),
        server.cert.display(),
        server.key.display(),
        clients.display(),
    );
    let mut gateway = Process::new(&pki.dir, "ingest", "ingest", &config, Ready::Health(telemetry));
    gateway.start().await;
    let send = |tls: &Arc<rustls::ClientConfig>, n: u64| {
        let tls = Arc::clone(tls);
        async move {
            let headers = [("Content-Type", PROTOBUF)];
            http::tls_request(addr, tls, "POST", "/v1/traces", &headers, &one_span(n, 0).encode_to_vec()).await
        }
    };
    let served = |result: std::io::Result<http::Response>, what: &str| {
        assert_eq!(result.unwrap_or_else(|e| panic!("{what}: {e}")).status, 200, "{what}");
    };
    let unknown_ca = |result: std::io::Result<http::Response>, what: &str| {
        let refused = tls_refusal(result);
        assert!(
            matches!(refused, rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA)),
            "{what}: {refused:?}"
        );
    };
    let reloads = |outcome: &'static str, count: f64| async move {
        let label = format!("outcome=\"{outcome}\"");
        crate::harness::wait::until(
            &format!("{count} {outcome} reloads of the client CA"),
            Duration::from_secs(10),
            || {
                let label = label.clone();
                async move { http::total(&http::metrics(telemetry).await, RELOADS, &[&label]) >= count }
            },
        )
        .await;
    };

    served(send(&old_client, 1).await, "a client of the CA");
    unknown_ca(send(&new_client, 2).await, "a client of the next CA, before the rotation");

    replace(&new_pem);
    reloads("success", 1.0).await;
    served(send(&new_client, 3).await, "a client of the next CA, after the rotation");
    unknown_ca(send(&old_client, 4).await, "a client of the old CA, after the rotation");

    // Not PEM: refused at once, the next CA kept.
    replace(b"-----BEGIN CERTIFICATE-----\nnot base64\n");
    reloads("failure", 1.0).await;
    served(send(&new_client, 5).await, "a client of the next CA, after a broken file");
    unknown_ca(send(&old_client, 6).await, "a client of the old CA, after a broken file");

    // Gone: refused at the second read that misses it, the next CA kept.
    std::fs::remove_file(&clients).unwrap();
    reloads("failure", 2.0).await;
    served(send(&new_client, 7).await, "a client of the next CA, after the file was deleted");
    unknown_ca(send(&old_client, 8).await, "a client of the old CA, after the file was deleted");

    // Both CAs: loaded, both served.
    replace(&[old_pem.as_slice(), new_pem.as_slice()].concat());
    reloads("success", 2.0).await;
    served(send(&old_client, 9).await, "a client of the old CA, trusted again");
    served(send(&new_client, 10).await, "a client of the next CA, still trusted");

    // Four refused handshakes, each counted once the server closed it.
    let listener = "listener=\"http\"";
    crate::harness::wait::until("four failed handshakes counted", Duration::from_secs(10), || async move {
        http::total(&http::metrics(telemetry).await, HANDSHAKE_FAILURES, &[listener]) >= 4.0
    })
    .await;
    let series = http::metrics(telemetry).await;
    assert_eq!(http::total(&series, HANDSHAKE_FAILURES, &[]), 4.0, "the four refused clients:\n{series:#?}");
    let reloads = |outcome: &str| http::total(&series, RELOADS, &[listener, &format!("outcome=\"{outcome}\"")]);
    assert_eq!((reloads("success"), reloads("failure")), (2.0, 2.0), "reloads counted, each once:\n{series:#?}");
    assert_eq!(gateway.stop().map(|status| status.success()), Some(true), "the gateway stops cleanly");

    let records = harness::read_topic(&kafka.brokers, &kafka.topics.spans, 1, Duration::from_secs(20), |records| {
        tenants_by_trace(records).len() >= 6
    });
    let traces: Vec<u64> = tenants_by_trace(&records).into_iter().map(|(n, _)| n).collect();
    assert_eq!(traces, [1, 3, 5, 7, 9, 10], "exactly the requests of trusted clients were written");
}

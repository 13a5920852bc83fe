//! Loki over HTTP, its push API or its OTLP endpoint: the tenant header, and what a refusal means.

use crate::delivery::http::{HttpTransport, Refusal, GZIP, SNAPPY};
use crate::delivery::Delivery;

use super::config::{LokiConfig, Protocol};

/// The HTTP transport to `config.endpoint`, with `X-Scope-OrgID` for a multi-tenant Loki: each batch's tenant, or
/// for the default tenant's records, `tenant_id`.
pub fn transport(config: &LokiConfig) -> Result<HttpTransport, String> {
    let mut headers = config.headers.clone();
    if let Some(tenant) = &config.tenant_id {
        headers.insert("X-Scope-OrgID".into(), tenant.clone());
    }
    let body = match config.protocol {
        Protocol::Push => SNAPPY,
        Protocol::Otlp => GZIP,
    };
    HttpTransport::new(&Delivery { headers, ..config.delivery() }, &config.endpoint, body, classify)?
        .with_tenant_header("X-Scope-OrgID")
}

/// Loki, like Prometheus, stores the valid entries of a push (or of an OTLP request) and answers 400 for the rest: entries too old
/// (`reject_old_samples`), too far behind their stream, or over `max_line_size`. Those are counted refusals of a
/// request that was otherwise stored. Any other 4xx (unparsable labels, say) refuses the whole request.
fn classify(_: hyper::StatusCode, body: &str) -> Refusal {
    let body = body.to_ascii_lowercase();
    if body.contains("too old") || body.contains("too far behind") || body.contains("greater than") {
        Refusal::Some("too_old")
    } else if body.contains("max entry size") || body.contains("line too long") {
        Refusal::Some("line_too_long")
    } else if body.contains("limit") {
        Refusal::Whole("limits")
    } else {
        Refusal::Whole("bad_request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> (bool, &'static str) {
        match classify(hyper::StatusCode::BAD_REQUEST, body) {
            Refusal::Whole(reason) => (true, reason),
            Refusal::Some(reason) => (false, reason),
            Refusal::Split(_) => unreachable!("Loki stores the rest of a request it refuses in part"),
        }
    }

    #[test]
    fn entries_loki_skipped_are_counted_and_other_refusals_refuse_the_request() {
        assert_eq!(reason("entry for stream '{a=\"b\"}' has timestamp too old"), (false, "too_old"));
        assert_eq!(reason("Max entry size '262144' bytes exceeded"), (false, "line_too_long"));
        assert_eq!(reason("ingestion rate limit exceeded"), (true, "limits"));
        assert_eq!(reason("error parsing labels"), (true, "bad_request"));
    }
}

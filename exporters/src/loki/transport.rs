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
    let transport = HttpTransport::new(&Delivery { headers, ..config.delivery() }, &config.endpoint, body, classify)?
        .with_tenant_header("X-Scope-OrgID")?;
    Ok(match config.protocol {
        Protocol::Push => transport,
        Protocol::Otlp => transport.with_partial_success(partial_success),
    })
}

/// The log records an OTLP logs response says it refused.
fn partial_success(body: &[u8]) -> Option<(u64, String)> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use prost::Message as _;
    let partial = ExportLogsServiceResponse::decode(body).ok()?.partial_success?;
    (partial.rejected_log_records > 0).then_some((partial.rejected_log_records as u64, partial.error_message))
}

/// How many entries Loki says it ignored: its refusal ends `total ignored: 40 out of 100`.
fn ignored(body: &str) -> Option<u64> {
    let (_, rest) = body.rsplit_once("total ignored: ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Loki, like Prometheus, stores the valid entries of a push (or of an OTLP request) and answers 400 for the rest: entries too old
/// (`reject_old_samples`), too far behind their stream, or over `max_line_size`. Those are counted refusals of a
/// request that was otherwise stored. Any other 4xx (unparsable labels, say) refuses the whole request.
fn classify(_: hyper::StatusCode, body: &str) -> Refusal {
    let body = body.to_ascii_lowercase();
    let refused = ignored(&body).unwrap_or(1);
    if body.contains("too old") || body.contains("too far behind") || body.contains("greater than") {
        Refusal::Some { reason: "too_old", refused }
    } else if body.contains("max entry size") || body.contains("line too long") {
        Refusal::Some { reason: "line_too_long", refused }
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
            Refusal::Some { reason, .. } => (false, reason),
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

    /// Loki refusing 40 of 100 entries was counted as 1 refused and 99 delivered; it says how many it ignored.
    #[test]
    fn the_entries_loki_says_it_ignored_are_counted() {
        let body =
            "entry with timestamp 2026-12-07 ignored, reason: 'entry too far behind', total ignored: 40 out of 100";
        match classify(hyper::StatusCode::BAD_REQUEST, body) {
            Refusal::Some { reason, refused } => assert_eq!((reason, refused), ("too_old", 40)),
            _ => panic!("not a partial refusal"),
        }
        match classify(hyper::StatusCode::BAD_REQUEST, "entry has timestamp too old") {
            Refusal::Some { refused, .. } => assert_eq!(refused, 1, "no count given: at least the one"),
            _ => panic!("not a partial refusal"),
        }
    }
}

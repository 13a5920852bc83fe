//! The remote-write endpoint over HTTP, and what a refusal means.

use crate::delivery::http::{HttpTransport, Refusal};

use super::config::PrometheusConfig;

/// The HTTP transport to `config.endpoint`.
pub fn transport(config: &PrometheusConfig) -> Result<HttpTransport, String> {
    HttpTransport::new(&config.endpoint, config.headers.clone(), config.timeout.get(), classify)
}

/// Prometheus answers 400 to samples it will never take — out of order, out of bounds (older than the head block),
/// a duplicate timestamp with another value — after appending every other sample of the request. Those count as
/// rejected samples (at least one per request) of the request that was otherwise stored. Any other 4xx refuses the
/// whole request.
fn classify(_: hyper::StatusCode, body: &str) -> Refusal {
    let body = body.to_ascii_lowercase();
    if body.contains("out of bounds") || body.contains("too old") {
        Refusal::Some("too_old")
    } else if body.contains("out of order") || body.contains("duplicate sample") {
        Refusal::Some("out_of_order")
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
        }
    }

    #[test]
    fn samples_prometheus_skipped_are_counted_and_other_refusals_refuse_the_request() {
        assert_eq!(reason("out of bounds: series {__name__=\"up\"}"), (false, "too_old"));
        assert_eq!(reason("Out of order sample"), (false, "out_of_order"));
        assert_eq!(reason("duplicate sample for timestamp"), (false, "out_of_order"));
        assert_eq!(reason("invalid label name"), (true, "bad_request"));
    }
}

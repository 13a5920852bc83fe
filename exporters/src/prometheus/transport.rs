//! The remote-write endpoint over HTTP, what a refusal means, and how a refused request is cut.

use bytes::Bytes;
use prost::Message as _;
use tailgate_proto::prometheus::{TimeSeries, WriteRequest};

use crate::delivery::http::{snappy, HttpTransport, Refusal, REMOTE_WRITE};

use super::config::PrometheusConfig;
use super::too_old::{RemoteWrite, TOO_OLD};

/// The HTTP transport to `config.endpoint`, finding too-old samples by search ([`RemoteWrite`]).
pub fn transport(config: &PrometheusConfig) -> Result<RemoteWrite<HttpTransport>, String> {
    let http = HttpTransport::new(&config.delivery(), &config.endpoint, REMOTE_WRITE, classify)?
        .with_split(split)
        .with_tenant_header(&config.tenant_header)?;
    Ok(RemoteWrite::new(http))
}

/// Prometheus answers 400 to a sample it will never take — out of order, out of bounds (older than the head
/// block), too old for the out-of-order window, a duplicate timestamp with another value — and rolls back the
/// whole request (`storage/remote/write_handler.go` appends every series, and on the first error rolls back and
/// answers 400). So such a 400 stored nothing: the request is cut and resent until only the refused samples are
/// left out ([`split`]). Any other 4xx refuses the whole request.
fn classify(_: hyper::StatusCode, body: &str) -> Refusal {
    let body = body.to_ascii_lowercase();
    if body.contains("out of bounds") || body.contains("too old") {
        Refusal::Split(TOO_OLD)
    } else if body.contains("duplicate sample") {
        Refusal::Split("duplicate")
    } else if body.contains("out of order") {
        Refusal::Split("out_of_order")
    } else {
        Refusal::Whole("bad_request")
    }
}

/// A remote-write body cut in two halves: of its series if it has several, else of its one series' samples (earlier
/// half first); `None` for a single sample. Runs only for refused requests; decoding a batch takes about a
/// millisecond, and a refused sample costs about two requests per halving (`log2` of the batch's samples).
pub(super) fn split(body: &Bytes) -> Option<[(Bytes, u64); 2]> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    let mut request = WriteRequest::decode(raw.as_slice()).ok()?;
    let second = if request.timeseries.len() > 1 {
        let half = request.timeseries.len() / 2;
        request.timeseries.split_off(half)
    } else {
        let series = request.timeseries.first_mut()?;
        if series.samples.len() < 2 {
            return None;
        }
        let later = series.samples.split_off(series.samples.len() / 2);
        // The exemplars go with the first half.
        vec![TimeSeries { labels: series.labels.clone(), samples: later, exemplars: Vec::new() }]
    };
    let part = |timeseries: Vec<TimeSeries>| {
        let count = timeseries.iter().map(|s| s.samples.len() as u64).sum();
        (snappy(&WriteRequest { timeseries }.encode_to_vec()), count)
    };
    Some([part(request.timeseries), part(second)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailgate_proto::prometheus::{Label, Sample};

    fn reason(body: &str) -> (bool, &'static str) {
        match classify(hyper::StatusCode::BAD_REQUEST, body) {
            Refusal::Whole(reason) => (true, reason),
            Refusal::Split(reason) => (false, reason),
            Refusal::Some { .. } => unreachable!("Prometheus never stores part of a request it refuses"),
        }
    }

    #[test]
    fn samples_prometheus_refuses_split_the_request_and_other_refusals_refuse_it() {
        assert_eq!(reason("out of bounds: series {__name__=\"up\"}"), (false, "too_old"));
        assert_eq!(reason("too old sample"), (false, "too_old"));
        assert_eq!(reason("Out of order sample"), (false, "out_of_order"));
        assert_eq!(reason("duplicate sample for timestamp"), (false, "duplicate"));
        assert_eq!(reason("invalid label name"), (true, "bad_request"));
    }

    fn series(name: &str, times: &[i64]) -> TimeSeries {
        TimeSeries {
            exemplars: Vec::new(),
            labels: vec![Label { name: "__name__".into(), value: name.into() }],
            samples: times.iter().map(|t| Sample { value: 1.0, timestamp: *t }).collect(),
        }
    }

    fn decode(body: &Bytes) -> WriteRequest {
        WriteRequest::decode(snap::raw::Decoder::new().decompress_vec(body).unwrap().as_slice()).unwrap()
    }

    #[test]
    fn a_body_is_cut_by_series_then_by_samples_in_order_down_to_one_sample() {
        let body = snappy(
            &WriteRequest { timeseries: vec![series("a", &[1]), series("b", &[1, 2]), series("c", &[5])] }
                .encode_to_vec(),
        );
        let [(first, n1), (second, n2)] = split(&body).unwrap();
        assert_eq!((n1, n2), (1, 3));
        assert_eq!(decode(&first).timeseries, vec![series("a", &[1])]);
        assert_eq!(decode(&second).timeseries, vec![series("b", &[1, 2]), series("c", &[5])]);
        let [(b, _), _] = split(&second).unwrap();
        let [(early, 1), (late, 1)] = split(&b).unwrap() else { panic!("one sample each") };
        assert_eq!(decode(&early).timeseries, vec![series("b", &[1])]);
        assert_eq!(decode(&late).timeseries, vec![series("b", &[2])]);
        assert!(split(&early).is_none(), "a single sample is not cut");
    }
}

//! Samples too old for the receiver, found in a few requests instead of one request per sample.
//!
//! Prometheus (and Mimir) refuse a sample older than a boundary — the head block's lower bound, `out of bounds`, or
//! the out-of-order window, `too old` — and roll back the whole request for it. Halving the refused request down to
//! single samples costs about two requests per sample: after an outage longer than the window, every backlog
//! sample went out alone, the exporter fell to a few hundred samples per second and the lag grew for good.
//!
//! The boundary only moves forward, and a sample older than a refused one is refused too. So, for a request refused
//! as too old, [`RemoteWrite`] searches the boundary among the *first* samples of the request's series (sending a
//! series' oldest sample alone is safe: its later samples are newer, so nothing is sent out of order); every sample
//! not newer than the newest refused first sample is left out and counted, and the rest sent again — `log2(series)`
//! single-sample requests per round, and a round per sample a series holds at most. The newest refused time is
//! remembered per tenant as a floor: later requests leave out what is not newer without asking, so a backlog older
//! than the window is classified whole, locally. (A receiver whose storage was wiped would take older samples again;
//! the floor lives until the exporter restarts.)

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use futures::future::BoxFuture;
use prost::Message as _;
use tailgate_proto::prometheus::{TimeSeries, WriteRequest};

use crate::delivery::http::snappy;
use crate::delivery::{Attempt, Tenant, Transport};

/// The refusal reason of a sample older than the receiver's boundary.
pub const TOO_OLD: &str = "too_old";

/// Rounds of search per request before the refused request is left to halving.
const MAX_ROUNDS: usize = 64;

/// A remote-write transport that finds too-old samples by search, not by halving.
pub struct RemoteWrite<T> {
    inner: T,
    /// Per tenant, the newest sample time (ms) the receiver refused as too old.
    floors: Mutex<HashMap<Tenant, i64>>,
}

impl<T: Transport> RemoteWrite<T> {
    pub fn new(inner: T) -> Self {
        RemoteWrite { inner, floors: Mutex::new(HashMap::new()) }
    }

    fn floor(&self, tenant: &Tenant) -> Option<i64> {
        self.floors.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(tenant).copied()
    }

    fn raise_floor(&self, tenant: &Tenant, time: i64) {
        let mut floors = self.floors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let floor = floors.entry(tenant.clone()).or_insert(time);
        *floor = (*floor).max(time);
    }

    async fn send(&self, body: Bytes, tenant: Tenant) -> Attempt {
        let mut left_out = 0;
        let mut body = body;
        if let Some(floor) = self.floor(&tenant) {
            let Some(mut request) = decode(&body) else { return self.inner.send(body, tenant).await };
            left_out = drop_until(&mut request, floor);
            if left_out > 0 {
                if request.timeseries.is_empty() {
                    return too_old(left_out, "older than a sample the receiver refused before");
                }
                body = snappy(&request.encode_to_vec());
            }
        }
        let mut rounds = 0;
        loop {
            match self.inner.send(body.clone(), tenant.clone()).await {
                Attempt::Split { reason: TOO_OLD, message } if rounds < MAX_ROUNDS => {
                    rounds += 1;
                    let Some(mut request) = decode(&body) else { return Attempt::Split { reason: TOO_OLD, message } };
                    let boundary = match self.search(&request, &tenant).await {
                        Ok(Some(boundary)) => boundary,
                        // Every series' oldest sample is taken: the refusal is not of a global boundary.
                        Ok(None) => return Attempt::Split { reason: TOO_OLD, message },
                        // The receiver went away mid-search: what was learnt stays in the floor; the whole body is
                        // retried.
                        Err(attempt) => return attempt,
                    };
                    self.raise_floor(&tenant, boundary);
                    left_out += drop_until(&mut request, boundary);
                    if request.timeseries.is_empty() {
                        return too_old(left_out, &message);
                    }
                    body = snappy(&request.encode_to_vec());
                }
                Attempt::Accepted { rejected: 0, .. } if left_out > 0 => {
                    return too_old(left_out, "older than the receiver's boundary")
                }
                other => return other,
            }
        }
    }

    /// The newest first sample (ms) of `request`'s series that the receiver refuses as too old, by binary search
    /// over the series' first samples, each sent alone; `None` when it takes them all. `Err` is an answer that is
    /// neither (the receiver is down, say).
    async fn search(&self, request: &WriteRequest, tenant: &Tenant) -> Result<Option<i64>, Attempt> {
        let mut firsts: Vec<(i64, &TimeSeries)> =
            request.timeseries.iter().filter_map(|s| Some((s.samples.first()?.timestamp, s))).collect();
        firsts.sort_by_key(|(time, _)| *time);
        // Invariant: firsts[..low] are refused, firsts[high..] taken.
        let (mut low, mut high) = (0, firsts.len());
        while low < high {
            let middle = low + (high - low) / 2;
            let (time, series) = firsts[middle];
            let probe = TimeSeries {
                labels: series.labels.clone(),
                samples: vec![series.samples[0].clone()],
                exemplars: Vec::new(),
            };
            let body = snappy(&WriteRequest { timeseries: vec![probe] }.encode_to_vec());
            match self.inner.send(body, tenant.clone()).await {
                Attempt::Accepted { .. } => high = middle,
                Attempt::Split { reason: TOO_OLD, .. } => {
                    low = middle + 1;
                    // Everything not newer than a refused sample is refused too.
                    while low < high && firsts[low].0 <= time {
                        low += 1;
                    }
                }
                other => return Err(other),
            }
        }
        Ok(low.checked_sub(1).map(|refused| firsts[refused].0))
    }
}

fn decode(body: &Bytes) -> Option<WriteRequest> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).ok()?;
    WriteRequest::decode(raw.as_slice()).ok()
}

/// Leaves out every sample at or before `floor` (ms), and series left without samples; how many samples.
fn drop_until(request: &mut WriteRequest, floor: i64) -> u64 {
    let mut dropped = 0;
    request.timeseries.retain_mut(|series| {
        let before = series.samples.len();
        series.samples.retain(|sample| sample.timestamp > floor);
        dropped += (before - series.samples.len()) as u64;
        series.exemplars.retain(|exemplar| exemplar.timestamp > floor);
        !series.samples.is_empty()
    });
    dropped
}

fn too_old(count: u64, message: &str) -> Attempt {
    Attempt::Accepted { rejected: count, reason: TOO_OLD, message: Some(format!("{count} samples too old: {message}")) }
}

impl<T: Transport> Transport for RemoteWrite<T> {
    fn send(&self, body: Bytes, tenant: Tenant) -> BoxFuture<'_, Attempt> {
        Box::pin(RemoteWrite::send(self, body, tenant))
    }

    fn split(&self, body: &Bytes) -> Option<[(Bytes, u64); 2]> {
        self.inner.split(body)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tailgate_proto::prometheus::{Label, Sample};

    use super::*;
    use crate::delivery::Health;
    use crate::delivery::{deliver, Delivered, Retry};

    /// A receiver as Prometheus is: a sample older than `boundary` is too old, one not newer than its series' last
    /// is out of order, and either refuses the whole request, storing nothing.
    struct Receiver {
        boundary: i64,
        stored: Mutex<HashMap<String, Vec<i64>>>,
        requests: AtomicUsize,
    }

    impl Receiver {
        fn new(boundary: i64) -> Receiver {
            Receiver { boundary, stored: Mutex::default(), requests: AtomicUsize::new(0) }
        }

        fn stored(&self) -> usize {
            self.stored.lock().unwrap().values().map(Vec::len).sum()
        }
    }

    impl Transport for Receiver {
        fn send(&self, body: Bytes, _: Tenant) -> BoxFuture<'_, Attempt> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            let request = decode(&body).unwrap();
            let mut stored = self.stored.lock().unwrap();
            let mut last: HashMap<String, i64> =
                stored.iter().map(|(name, times)| (name.clone(), *times.last().unwrap())).collect();
            let mut refusal = None;
            for series in &request.timeseries {
                for sample in &series.samples {
                    let last = last.entry(series.labels[0].value.clone()).or_insert(i64::MIN);
                    if sample.timestamp < self.boundary {
                        refusal = Some(TOO_OLD);
                    } else if sample.timestamp < *last {
                        refusal = refusal.or(Some("out_of_order"));
                    } else {
                        *last = sample.timestamp;
                    }
                }
            }
            let attempt = match refusal {
                Some(reason) => Attempt::Split { reason, message: reason.to_owned() },
                None => {
                    for series in &request.timeseries {
                        let times = stored.entry(series.labels[0].value.clone()).or_default();
                        for sample in &series.samples {
                            if times.last() != Some(&sample.timestamp) {
                                times.push(sample.timestamp);
                            }
                        }
                    }
                    Attempt::Accepted { rejected: 0, reason: "", message: None }
                }
            };
            Box::pin(async move { attempt })
        }

        fn split(&self, body: &Bytes) -> Option<[(Bytes, u64); 2]> {
            super::super::transport::split(body)
        }
    }

    /// 100 series of 10 samples each, at `start + series + 100 * i` ms.
    fn body(start: i64) -> Bytes {
        let timeseries = (0..100)
            .map(|s| TimeSeries {
                labels: vec![Label { name: "__name__".into(), value: format!("s{s}") }],
                samples: (0..10).map(|i| Sample { value: 1.0, timestamp: start + s + 100 * i }).collect(),
                exemplars: Vec::new(),
            })
            .collect();
        snappy(&WriteRequest { timeseries }.encode_to_vec())
    }

    async fn send(transport: &dyn Transport, body: Bytes) -> Delivered {
        let retry = Retry::default();
        deliver(transport, None, body, 1000, &retry, &Health::new("test"), &Default::default()).await
    }

    /// A batch of 1,000 samples of which the 700 oldest are too old: halving takes 1,599 requests (about two per
    /// sample); the search takes 50, stores exactly the 300 new enough, counts the 700, and a
    /// later batch wholly older than the boundary costs no request at all.
    #[tokio::test]
    async fn too_old_samples_cost_a_few_requests_not_two_each() {
        let boundary = 700;
        let halving = Receiver::new(boundary);
        match send(&halving, body(0)).await {
            Delivered::Accepted { rejected } => assert_eq!(rejected, [(TOO_OLD, 700)]),
            other => panic!("{other:?}"),
        }
        let halving_requests = halving.requests.load(Ordering::SeqCst);
        assert_eq!(halving.stored(), 300);

        let searching = RemoteWrite::new(Receiver::new(boundary));
        match send(&searching, body(0)).await {
            Delivered::Accepted { rejected } => assert_eq!(rejected, [(TOO_OLD, 700)]),
            other => panic!("{other:?}"),
        }
        let requests = searching.inner.requests.load(Ordering::SeqCst);
        assert_eq!(searching.inner.stored(), 300, "exactly the samples at or past the boundary are stored");
        // Each series holds 10 samples 100 ms apart, so the boundary (700) is found in 7 rounds — each a refused
        // send and at most log2(100) ≈ 7 refused probes of first samples (6 here, as equal times are skipped) —
        // then the send that is taken: 50 requests. Halving: 1,599.
        assert_eq!(requests, 50, "halving took {halving_requests}");
        assert_eq!(halving_requests, 1599);

        // A backlog batch wholly older than what was refused: classified here, not sent.
        match send(&searching, body(-2000)).await {
            Delivered::Accepted { rejected } => assert_eq!(rejected, [(TOO_OLD, 1000)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(searching.inner.requests.load(Ordering::SeqCst), requests, "no request for a batch below the floor");
    }
}

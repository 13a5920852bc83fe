//! A record's payload as each exporter translates it for its backend: Jaeger (OTLP traces), Prometheus
//! remote-write (OTLP metrics to series, delta sums accumulated) and Loki (OTLP logs to streams, or passed through
//! to its OTLP endpoint), then encoded as the request body. Two records in a row, so that state carried between records (running totals) is exercised.
//! No panic; a record is either added or refused with a reason.
//! `tests/fuzz/run.sh exporter_record 60`

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tailgate_exporters::loki::{self, Loki, LokiConfig};
use tailgate_exporters::prometheus::{Prometheus, PrometheusConfig};
use tailgate_exporters::{jaeger, Backend};

fn twice<B: Backend>(backend: &mut B, payload: &[u8]) {
    let tenant: Option<Arc<str>> = Some(Arc::from("payments"));
    let mut items = B::Items::default();
    for partition in [0, 0] {
        let _ = backend.add(&mut items, partition, &tenant, payload);
    }
    let _ = backend.encode(items);
    backend.revoked(&[0]);
}

fuzz_target!(|data: &[u8]| {
    twice(&mut jaeger::backend(), data);
    twice(&mut loki::otlp_backend(), data);
    twice(&mut Prometheus::new(PrometheusConfig::default()), data);
    twice(&mut Loki::new(LokiConfig::default()), data);
});

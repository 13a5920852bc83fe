//! A record's payload as each exporter translates it for its backend: Jaeger (OTLP traces), Prometheus
//! remote-write (OTLP metrics to series, delta sums accumulated) and Loki (OTLP logs to streams, or passed through
//! to its OTLP endpoint), then encoded as the request body; and as the scrape endpoint holds and serves it (the
//! same translation into its store, rendered as text and as OpenMetrics). Two records in a row, so that state carried between records (running totals) is exercised.
//! No panic; a record is either added or refused with a reason.
//! `tests/fuzz/run.sh exporter_record 60`

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tailgate_exporters::loki::{self, Loki, LokiConfig};
use tailgate_exporters::prometheus::{Families, Prometheus, PrometheusConfig, Translated, Translation, Translator};
use tailgate_exporters::scrape::{render, Format, Store};
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

fn scraped(payload: &[u8]) {
    let translation = Translation {
        resource_to_telemetry_conversion: true,
        labels: Default::default(),
        max_series: 1000,
        max_record_bytes: 1 << 20,
        expiration: std::time::Duration::from_secs(300),
        rebuilds_store: true,
    };
    let mut translator = Translator::new(translation);
    let mut store = Store::new(1000);
    for partition in [0, 1] {
        let (mut series, mut families) = (Translated::default(), Families::new());
        if translator.add(&mut series, Some(&mut families), partition, &None, payload).is_ok() {
            store.update(partition, series, &mut families);
        }
    }
    let _ = render(&store, Format::Text, true);
    let _ = render(&store, Format::OpenMetrics, false);
    store.revoke(&[0]);
    store.expire(i64::MAX);
    assert!(store.is_empty(), "everything expires");
}

fuzz_target!(|data: &[u8]| {
    scraped(data);
    twice(&mut jaeger::backend(), data);
    twice(&mut loki::otlp_backend(), data);
    twice(&mut Prometheus::new(PrometheusConfig::default()), data);
    twice(&mut Loki::new(LokiConfig::default()), data);
});

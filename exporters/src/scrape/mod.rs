//! `exporters.prometheus`: a Prometheus scrape endpoint, as the Collector's `prometheus` exporter serves one, fed
//! from the metrics topic.
//!
//! The records are translated exactly as for remote-write ([`crate::prometheus::Translator`]: names, labels,
//! buckets, delta sums accumulated, `target_info`), and the newest sample of each series is served on `/metrics`
//! until it is `metric_expiration` old.
//!
//! **Scaling.** The workers are one consumer group (`tailgate-exporter-prometheus`); the metrics topic is keyed by
//! resource, scope and metric name, so every point of a series is on one partition, and each worker serves the
//! series of the partitions it owns: N workers are N scrape targets that together hold every series once. When a
//! partition moves, its series leave the old owner at once and the new owner rebuilds them by reading the partition
//! from `look_back` ago (default: `metric_expiration`). **The gap:** until the new owner has read up to the end,
//! its scrapes miss or show older values of the moved series — usually well under a second, longer behind a large
//! backlog; delta sums restart from the look-back, which Prometheus's `rate()` reads as a counter reset.
//!
//! **Offsets.** This is a state store, not a delivery: nothing is committed, and a worker that starts or takes a
//! partition over always reads from the look-back, so a restart loses no current value. A record that can't be
//! read is counted (`tailgate_exporter_rejected_items_total{exporter="prometheus"}`) and skipped — it is the
//! remote-write exporter's to dead-letter.

mod config;
mod exposition;
mod store;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use rdkafka::message::{Message as _, OwnedMessage};
use tailgate_kafka::{
    contract, ensure_topics, now_ms, Consumer, ConsumerSettings, Event, KafkaConfig, Partitions, Start,
};
use tailgate_proto::prometheus::Label;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::delivery::{Health, Tenant};
use crate::exporter::{group_id, Exporter, ExporterError};
use crate::metrics as m;
use crate::outcome::ExporterStats;
use crate::prometheus::{Families, Translated, Translation, Translator};

pub use config::ScrapeConfig;
pub use exposition::{render, Format};
pub use store::Store;

/// The exporter's name, in config and on its metrics: the Collector's.
pub const NAME: &str = "prometheus";

/// The label a non-default tenant's series carry, so two tenants' same series stay two.
pub const TENANT_LABEL: &str = "tenant";

/// How often expired series are dropped between scrapes.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// What librdkafka may prefetch per partition.
const PREFETCH_KBYTES: u32 = 16 * 1024;
/// Bytes of series one record may become (as for remote-write's default batch).
const MAX_RECORD_BYTES: usize = 32 * 1024 * 1024;

/// Owned partitions need no state beyond their series, which live in the [`Store`].
struct Owned;

impl Partitions for Owned {
    type State = ();

    fn open(&self, partitions: &[i32]) -> Vec<()> {
        vec![(); partitions.len()]
    }
}

struct Scraper {
    config: ScrapeConfig,
    consumer: Consumer<Owned>,
    translator: Translator,
    store: Arc<Mutex<Store>>,
    listener: Option<tailgate_tls::Listener>,
    stats: Arc<ExporterStats>,
}

/// Builds the scrape exporter: checks the topic, binds the endpoint (a port in use is an error now, not later) and
/// joins the group.
pub(crate) async fn build(config: &ScrapeConfig, kafka: &KafkaConfig) -> Result<Exporter, ExporterError> {
    let topic = kafka.topics.metrics.clone();
    let none: &[(&str, &str)] = &[];
    ensure_topics(kafka, &[(&topic, none)], Duration::from_secs(30)).await?;
    let tcp = TcpListener::bind(&config.endpoint)
        .await
        .map_err(|e| ExporterError::Setup(NAME, format!("cannot listen on {}: {e}", config.endpoint)))?;
    let tls =
        match &config.tls {
            Some(tls) => Some(tailgate_tls::ServerTls::new(tls, &[b"http/1.1"], "scrape").map_err(|error| {
                ExporterError::Setup(NAME, format!("exporters.prometheus.tls.{}: {error}", error.key))
            })?),
            None => None,
        };
    // A scraper's port: a few connections, none held silent (see tailgate_tls::Listener).
    let listener = tailgate_tls::Listener::new(tcp, "scrape", tls, tailgate_tls::Limits::SCRAPED);
    let settings = ConsumerSettings {
        group_id: group_id(kafka, NAME),
        client_id: format!("tailgate-exporter-{NAME}"),
        partition_eof: false,
        prefetch_kbytes: Some(PREFETCH_KBYTES),
        lag_metric: m::LAG_RECORDS,
        lag_labels: vec![("exporter", NAME.to_owned())],
        start: Start::LookBack(config.look_back()),
    };
    let consumer = Consumer::subscribe(kafka, &settings, &topic, Owned)?;
    let translator = Translator::new(Translation {
        resource_to_telemetry_conversion: config.resource_to_telemetry_conversion,
        labels: config.const_labels.clone(),
        max_series: config.max_series,
        max_record_bytes: MAX_RECORD_BYTES,
        expiration: config.metric_expiration.get(),
        rebuilds_store: true,
    });
    let stats = Arc::new(ExporterStats::default());
    let scraper = Scraper {
        config: config.clone(),
        consumer,
        translator,
        store: Arc::new(Mutex::new(Store::new(config.max_series))),
        listener: Some(listener),
        stats: Arc::clone(&stats),
    };
    Ok(Exporter {
        name: NAME,
        stats,
        health: Health::new(NAME),
        run: Box::new(move |shutdown, grace| Box::pin(scraper.run(shutdown, grace))),
    })
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scraper {
    async fn run(mut self, shutdown: CancellationToken, grace: Duration) -> Result<(), ExporterError> {
        let listener = self.listener.take().expect("run once");
        let address = listener.local_addr().map_err(|e| ExporterError::Setup(NAME, e.to_string()))?;
        let serving = shutdown.child_token();
        let server = tokio::spawn(serve(
            listener,
            Served {
                store: Arc::clone(&self.store),
                auth: self.config.auth.clone(),
                open_metrics: self.config.enable_open_metrics,
                timestamps: self.config.send_timestamps,
                expiration: self.config.metric_expiration.get(),
            },
            // Its own token: the endpoint stops with the consumer, also when the consumer ends on its own.
            serving.clone(),
        ));
        tracing::info!(exporter = NAME, %address, topic = %self.consumer.topic(), look_back = ?self.config.look_back(),
            "serving the metrics topic for scraping on /metrics");
        let mut expire = tokio::time::interval(EXPIRE_EVERY);
        let mut fatal = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.consumer.recv() => match event {
                    Some(Event::Record { epoch, message }) => self.record(epoch, &message),
                    Some(Event::Revoked { partitions }) => {
                        lock(&self.store).revoke(&partitions);
                        self.translator.revoked(&partitions);
                        self.report();
                    }
                    Some(Event::End { .. }) => {}
                    Some(Event::Fatal { error }) => {
                        fatal = Some(ExporterError::Consumer(NAME, error));
                        break;
                    }
                    None => break,
                },
                _ = expire.tick() => {
                    expire_now(&self.store, self.config.metric_expiration.get());
                    self.report();
                }
            }
        }
        // Nothing was committed and nothing is: the next owner rebuilds from the look-back.
        self.consumer.close(grace).await;
        serving.cancel();
        let _ = server.await;
        tracing::info!(exporter = NAME, "exporter stopped");
        fatal.map_or(Ok(()), Err)
    }

    /// Translates a record of a partition still owned under `epoch` into the store.
    fn record(&mut self, epoch: u64, message: &OwnedMessage) {
        let partition = message.partition();
        if self.consumer.ownership().epoch(partition) != Some(epoch) {
            return;
        }
        let payload = message.payload().unwrap_or_default();
        self.stats.records_read.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_read.fetch_add(payload.len() as u64, Ordering::Relaxed);
        let tenant = contract::readable(message)
            .map_err(|error| ("unknown_contract", error))
            .and_then(|()| contract::tenant(message).map_err(|error| ("invalid_tenant", error)))
            .map(|tenant| -> Tenant { tenant.map(Arc::from) });
        let mut series = Translated::default();
        let mut families = Families::new();
        let translated = tenant.and_then(|tenant| {
            let added = self.translator.add(&mut series, Some(&mut families), partition, &tenant, payload);
            added.map(|batch| (batch, tenant)).map_err(|error| ("undecodable", error))
        });
        let (batch, tenant) = match translated {
            Ok(translated) => translated,
            Err((reason, error)) => {
                tracing::warn!(exporter = NAME, partition, offset = message.offset(), %error, reason,
                    "unreadable record skipped");
                self.reject(reason, 1);
                return;
            }
        };
        for (reason, count) in batch.dropped {
            self.reject(reason, count);
        }
        let (series, mut families) = relabel(series, families, &self.config.namespace, &tenant);
        let refused = lock(&self.store).update(partition, series, &mut families);
        if refused > 0 {
            self.reject("series_limit", refused);
        }
    }

    fn reject(&self, reason: &'static str, count: u64) {
        metrics::counter!(m::REJECTED_ITEMS, "exporter" => NAME, "reason" => reason).increment(count);
        self.stats.items_rejected.fetch_add(count, Ordering::Relaxed);
    }

    fn report(&self) {
        metrics::gauge!(m::SCRAPE_SERIES, "exporter" => NAME).set(lock(&self.store).len() as f64);
    }
}

fn expire_now(store: &Mutex<Store>, expiration: Duration) {
    let expired = lock(store).expire(now_ms() - expiration.as_millis() as i64);
    if expired > 0 {
        metrics::counter!(m::SCRAPE_EXPIRED, "exporter" => NAME).increment(expired as u64);
    }
}

/// The `namespace` prefix on every metric name but `target_info`, and a non-default tenant as the `tenant` label.
/// A label of that name from the data always becomes `exported_tenant` (as Prometheus does with clashing target
/// labels), for the default tenant too: a client's attribute must never give its series another tenant's labels.
fn relabel(translated: Translated, families: Families, namespace: &str, tenant: &Tenant) -> (Translated, Families) {
    let prefixed = |name: &str| if namespace.is_empty() { name.to_owned() } else { format!("{namespace}_{name}") };
    let relabeled = |mut labels: Vec<Label>| {
        for label in &mut labels {
            if label.name == "__name__" && label.value != "target_info" {
                label.value = prefixed(&label.value);
            } else if label.name == TENANT_LABEL {
                label.name = format!("exported_{TENANT_LABEL}");
            }
        }
        if let Some(tenant) = tenant {
            labels.push(Label { name: TENANT_LABEL.to_owned(), value: tenant.to_string() });
        }
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels
    };
    let Translated { series, exemplars } = translated;
    let translated = Translated {
        series: series.into_iter().map(|(labels, samples)| (relabeled(labels), samples)).collect(),
        exemplars: exemplars.into_iter().map(|(labels, exemplars)| (relabeled(labels), exemplars)).collect(),
    };
    let families = families.into_iter().map(|(name, family)| (prefixed(&name), family)).collect();
    (translated, families)
}

/// What `/metrics` needs.
#[derive(Clone)]
struct Served {
    store: Arc<Mutex<Store>>,
    auth: Option<tailgate_tls::ScrapeAuth>,
    open_metrics: bool,
    timestamps: bool,
    expiration: Duration,
}

async fn serve(listener: tailgate_tls::Listener, served: Served, shutdown: CancellationToken) {
    let auth = served.auth.clone();
    let mut app = axum::Router::new().route("/metrics", axum::routing::get(metrics_page)).with_state(served);
    if let Some(auth) = auth {
        app = app.layer(axum::middleware::from_fn_with_state(Arc::new(auth), tailgate_tls::scrape_auth::require));
    }
    let stop = shutdown.cancelled_owned();
    if let Err(error) = tailgate_tls::serve(listener, app, tailgate_tls::HttpTimers::SCRAPED, stop).await {
        tracing::error!(exporter = NAME, %error, "scrape endpoint failed");
    }
}

async fn metrics_page(State(served): State<Served>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept, served.open_metrics);
    // A series past its expiration is never served, even between sweeps.
    expire_now(&served.store, served.expiration);
    let body = exposition::render(&lock(&served.store), format, served.timestamps);
    ([(header::CONTENT_TYPE, format.content_type())], body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::Series;
    use tailgate_proto::prometheus::Sample;

    #[test]
    fn namespace_and_tenant_are_applied_but_not_to_target_info() {
        let series = Series::from([
            (
                vec![
                    Label { name: "__name__".into(), value: "orders_total".into() },
                    Label { name: "tenant".into(), value: "from-data".into() },
                ],
                vec![Sample { value: 1.0, timestamp: 1 }],
            ),
            (
                vec![Label { name: "__name__".into(), value: "target_info".into() }],
                vec![Sample { value: 1.0, timestamp: 1 }],
            ),
        ]);
        let families = Families::from([(
            "orders_total".to_owned(),
            crate::prometheus::Family { kind: crate::prometheus::Kind::Counter, help: String::new() },
        )]);
        let translated = Translated { series, exemplars: Default::default() };
        let (translated, families) = relabel(translated, families, "shop", &Some(Arc::from("team-a")));
        let names: Vec<Vec<(String, String)>> = translated
            .series
            .keys()
            .map(|labels| labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect())
            .collect();
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            names,
            [
                vec![
                    pair("__name__", "shop_orders_total"),
                    pair("exported_tenant", "from-data"),
                    pair("tenant", "team-a")
                ],
                vec![pair("__name__", "target_info"), pair("tenant", "team-a")],
            ]
        );
        assert!(families.contains_key("shop_orders_total"));
    }

    /// After a rebalance the partition's store is rebuilt from the records re-read, and `target_info` must be among
    /// them: the translator sent a resource's `target_info` once per newer time, process-wide, so a partition owned
    /// again never got it back until the resource's next export. For the scrape endpoint every record gives it.
    #[test]
    fn every_record_gives_its_target_info_to_the_store() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, Gauge, Metric, NumberDataPoint};
        use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
        use prost::Message as _;
        let attribute = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
        };
        let point = NumberDataPoint {
            time_unix_nano: 1_000_000_000,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        };
        let gauge = Gauge { data_points: vec![point] };
        let metric = Metric { name: "carts".into(), data: Some(metric::Data::Gauge(gauge)), ..Default::default() };
        let record = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                    attributes: vec![attribute("service.name", "cart"), attribute("k8s.pod.name", "cart-1")],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec();
        let translation = |per_record| Translation {
            resource_to_telemetry_conversion: false,
            labels: Default::default(),
            max_series: 100,
            max_record_bytes: 1 << 20,
            expiration: Duration::from_secs(300),
            rebuilds_store: per_record,
        };
        let has_target_info = |translator: &mut Translator| {
            let mut items = Translated::default();
            translator.add(&mut items, None, 0, &None, &record).unwrap();
            items.series.keys().flatten().any(|l| l.name == "__name__" && l.value == "target_info")
        };
        let mut scrape = Translator::new(translation(true));
        assert!(has_target_info(&mut scrape) && has_target_info(&mut scrape), "read again: given again");
        let mut remote_write = Translator::new(translation(false));
        assert!(has_target_info(&mut remote_write) && !has_target_info(&mut remote_write), "sent once per time");
    }

    /// A partition revoked and owned again re-reads its look-back: the delta sums must come back as they stood,
    /// not start again from the look-back (a counter reset, `increase()` jumping) nor count the re-read twice.
    #[test]
    fn a_partition_owned_again_serves_its_delta_sums_as_they_stood() {
        use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
        use opentelemetry_proto::tonic::metrics::v1::{
            metric, number_data_point, AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics,
            Sum,
        };
        use prost::Message as _;
        let delta = |value: i64, second: u64| {
            let point = NumberDataPoint {
                start_time_unix_nano: (second - 1) * 1_000_000_000,
                time_unix_nano: second * 1_000_000_000,
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            };
            let sum = Sum {
                data_points: vec![point],
                aggregation_temporality: AggregationTemporality::Delta as i32,
                is_monotonic: true,
            };
            let metric = Metric { name: "orders".into(), data: Some(metric::Data::Sum(sum)), ..Default::default() };
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        let mut translator = Translator::new(Translation {
            resource_to_telemetry_conversion: false,
            labels: Default::default(),
            max_series: 100,
            max_record_bytes: 1 << 20,
            expiration: Duration::from_secs(300),
            rebuilds_store: true,
        });
        let served = |translator: &mut Translator, records: &[Vec<u8>]| {
            let mut items = Translated::default();
            for record in records {
                translator.add(&mut items, None, 0, &None, record).unwrap();
            }
            items.series.into_values().flatten().map(|s| s.value).collect::<Vec<f64>>()
        };
        // 10 before the look-back, then 3 and 2 within it.
        assert_eq!(served(&mut translator, &[delta(10, 1), delta(3, 2), delta(2, 3)]), [10.0, 13.0, 15.0]);
        translator.revoked(&[0]);
        // Owned again: the look-back's two records re-read, then a new one.
        assert_eq!(served(&mut translator, &[delta(3, 2), delta(2, 3), delta(1, 4)]), [15.0, 15.0, 16.0]);
    }

    /// The default tenant's series carry no `tenant` label; a data point attribute `tenant: checkout` must not give
    /// them the label set of tenant checkout's own series.
    #[test]
    fn a_tenant_label_from_the_data_is_renamed_for_the_default_tenant_too() {
        let labels = vec![
            Label { name: "__name__".into(), value: "orders_total".into() },
            Label { name: "tenant".into(), value: "checkout".into() },
        ];
        let series = Series::from([(labels, vec![Sample { value: 1.0, timestamp: 1 }])]);
        let translated = Translated { series, exemplars: Default::default() };
        let (translated, _) = relabel(translated, Families::default(), "", &None);
        let labels: Vec<(&str, &str)> =
            translated.series.keys().flatten().map(|l| (l.name.as_str(), l.value.as_str())).collect();
        assert_eq!(labels, [("__name__", "orders_total"), ("exported_tenant", "checkout")]);
    }
}

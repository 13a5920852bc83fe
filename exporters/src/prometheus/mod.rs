//! Prometheus remote-write 1.0, from the metrics topic (business metrics and the sampler's RED metrics).
//!
//! OTLP is translated as the OpenTelemetry–Prometheus compatibility specification says:
//! * names: characters outside `[a-zA-Z0-9:]` separate words joined by `_`; the unit is appended (`s` → `seconds`,
//!   `By` → `bytes`, `{...}` annotations dropped, `x/y` → `x_per_y`), `_ratio` for gauges of unit `1`, `_total` for
//!   monotonic sums;
//! * monotonic cumulative sums → counters, non-monotonic sums and gauges → gauges; delta sums are accumulated into
//!   cumulative series here (the metrics topic is partitioned by resource, scope and name, so one exporter owns every
//!   point of a series; a partition's totals are dropped when it is revoked, as its next owner reads its records
//!   again from the last commit); delta histograms are dropped and counted (`delta_histogram`);
//! * histograms → `_bucket{le}` (cumulative, ending in `+Inf`), `_sum`, `_count`; summaries → `{quantile}`, `_sum`,
//!   `_count`; exponential histograms → the same classic buckets, one per exponential bucket, with the bucket's upper
//!   bound as `le` (negative buckets and the zero bucket first), so any Prometheus reads them without native
//!   histograms;
//! * `job` = `service.namespace/service.name`, `instance` = `service.instance.id`, the other resource attributes on a
//!   `target_info` series, and on every series too with `resource_to_telemetry_conversion`; the scope as
//!   `otel_scope_name`/`otel_scope_version`/`otel_scope_schema_url`; `external_labels` on every series;
//! * label names sanitized (invalid characters → `_`, a leading digit gets `key_`), values of colliding names joined
//!   with `;`, empty values dropped, labels sorted; samples of a series in timestamp order;
//! * a point flagged `NO_RECORDED_VALUE` becomes a staleness marker.

pub(crate) mod config;
mod labels;
mod naming;
mod points;
mod state;
mod too_old;
mod translate;
mod transport;

use bytes::Bytes;
use prost::Message as _;
use tailgate_proto::prometheus::{TimeSeries, WriteRequest};

use crate::backend::{Backend, Batch};
use crate::delivery::http::snappy;
use crate::delivery::Tenant;

pub use config::PrometheusConfig;
pub use naming::{metric_name, Kind};
pub use points::{Exemplars, Families, Family, Series, Translated};
pub use translate::{Translation, Translator};
pub use transport::transport;

/// The exporter's name, in config and on its metrics.
pub const NAME: &str = "prometheus_remote_write";

/// The remote-write backend: records translated into one write request per batch.
pub struct Prometheus {
    translator: Translator,
}

impl Prometheus {
    pub fn new(config: PrometheusConfig) -> Prometheus {
        Prometheus {
            translator: Translator::new(Translation {
                resource_to_telemetry_conversion: config.resource_to_telemetry_conversion,
                labels: config.external_labels,
                max_series: config.max_delta_series,
                expiration: config.delta_expiration.get(),
                rebuilds_store: false,
                max_record_bytes: (config.batch.max_bytes.get() as usize)
                    .saturating_mul(crate::backend::MAX_RECORD_EXPANSION),
            }),
        }
    }
}

impl Backend for Prometheus {
    type Items = Translated;

    fn add(
        &mut self,
        items: &mut Translated,
        partition: i32,
        tenant: &Tenant,
        payload: &[u8],
    ) -> Result<Batch, String> {
        self.translator.add(items, None, partition, tenant, payload)
    }

    fn encode(&mut self, items: Translated) -> Bytes {
        let Translated { series, mut exemplars } = items;
        let timeseries = series
            .into_iter()
            .map(|(labels, mut samples)| {
                // One series' samples go out in timestamp order; a repeated timestamp keeps its last value.
                samples.sort_by_key(|s| s.timestamp);
                samples.dedup_by(|later, earlier| {
                    let same = later.timestamp == earlier.timestamp;
                    if same {
                        earlier.value = later.value;
                    }
                    same
                });
                // In time order: Prometheus refuses an exemplar older than the series' last one.
                let mut exemplars = exemplars.remove(&labels).unwrap_or_default();
                exemplars.sort_by_key(|e| e.timestamp);
                TimeSeries { labels, samples, exemplars }
            })
            .collect();
        snappy(&WriteRequest { timeseries }.encode_to_vec())
    }

    /// Delta totals go with their partition: its next owner starts them again from the last commit.
    fn revoked(&mut self, partitions: &[i32]) {
        self.translator.revoked(partitions);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
    use opentelemetry_proto::tonic::metrics::v1::{
        metric, number_data_point, AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Metric,
        NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    };

    fn delta(name: &str, value: i64, time: u64) -> Vec<u8> {
        let sum = Sum {
            data_points: vec![NumberDataPoint {
                time_unix_nano: time,
                value: Some(number_data_point::Value::AsInt(value)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        };
        let metric = Metric { name: name.into(), data: Some(metric::Data::Sum(sum)), ..Default::default() };
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    /// The cumulative values `records` of `partition` become, in order.
    fn cumulative(backend: &mut Prometheus, partition: i32, records: &[Vec<u8>]) -> Vec<f64> {
        let mut items = Translated::default();
        for record in records {
            backend.add(&mut items, partition, &None, record).unwrap();
        }
        items.series.into_values().flatten().map(|s| s.value).collect()
    }

    /// After a rebalance the records since the last commit are read again (by this exporter or another): the
    /// totals learnt from them must go with the partition, or every re-read delta is counted twice.
    #[test]
    fn deltas_of_a_revoked_partition_read_again_are_not_counted_twice() {
        let mut backend = Prometheus::new(PrometheusConfig::default());
        let records = [delta("carts", 3, 1_000_000_000), delta("carts", 2, 2_000_000_000)];
        let other = [delta("orders", 10, 1_000_000_000)];
        assert_eq!(cumulative(&mut backend, 0, &records), [3.0, 5.0]);
        assert_eq!(cumulative(&mut backend, 1, &other), [10.0]);

        backend.revoked(&[0]);
        assert_eq!(cumulative(&mut backend, 0, &records), [3.0, 5.0], "the same values as before, not 8 and 10");
        assert_eq!(
            cumulative(&mut backend, 1, &[delta("orders", 1, 3_000_000_000)]),
            [11.0],
            "partition 1 keeps its totals"
        );
    }

    fn record(metric: Metric) -> Vec<u8> {
        let attributes = vec![opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "service.name".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("bomb".into())),
            }),
        }];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(opentelemetry_proto::tonic::resource::v1::Resource { attributes, ..Default::default() }),
                scope_metrics: vec![ScopeMetrics { metrics: vec![metric], ..Default::default() }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn exponential(points: Vec<ExponentialHistogramDataPoint>) -> Metric {
        let histogram = ExponentialHistogram {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        };
        Metric { name: "bomb".into(), data: Some(metric::Data::ExponentialHistogram(histogram)), ..Default::default() }
    }

    fn point(scale: i32, offset: i32, buckets: usize, attribute: usize) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "pod".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(format!(
                        "pod-{attribute:04}-with-a-long-name"
                    ))),
                }),
            }],
            time_unix_nano: 1_000_000_000,
            count: buckets as u64,
            scale,
            positive: Some(Buckets { offset, bucket_counts: vec![1; buckets] }),
            ..Default::default()
        }
    }

    /// The request body a batch becomes, uncompressed, and its series.
    fn translated(backend: &mut Prometheus, record: &[u8]) -> (Batch, usize, WriteRequest) {
        let mut items = Translated::default();
        let batch = backend.add(&mut items, 0, &None, record).unwrap();
        let body = backend.encode(items);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = WriteRequest::decode(raw.as_slice()).unwrap();
        (batch, raw.len(), request)
    }

    /// The `le` values of `request`'s `_bucket` series.
    fn bounds(request: &WriteRequest) -> Vec<String> {
        let mut bounds: Vec<String> = request
            .timeseries
            .iter()
            .filter(|s| s.labels.iter().any(|l| l.name == "__name__" && l.value.ends_with("_bucket")))
            .filter_map(|s| s.labels.iter().find(|l| l.name == "le").map(|l| l.value.clone()))
            .collect();
        bounds.sort_by(|a, b| a.parse::<f64>().unwrap_or(f64::MAX).total_cmp(&b.parse::<f64>().unwrap_or(f64::MAX)));
        bounds
    }

    /// An SDK lowers a series' scale as its values spread. Each point was translated at its own scale, so the
    /// `_bucket` series changed `le` set with every rescale (and back): half of them stopped without a staleness
    /// marker. A series keeps its lowest scale now, so a later point at a finer scale gives the same `le` set.
    #[test]
    fn an_exponential_series_keeps_its_le_set_when_the_sdk_rescales() {
        let mut backend = Prometheus::new(PrometheusConfig::default());
        let (_, _, fine) = translated(&mut backend, &record(exponential(vec![point(2, 0, 8, 0)])));
        let (_, _, coarse) = translated(&mut backend, &record(exponential(vec![point(1, 0, 4, 0)])));
        let (_, _, fine_again) = translated(&mut backend, &record(exponential(vec![point(2, 0, 8, 0)])));
        assert_eq!(bounds(&fine).len(), 9, "8 buckets at scale 2 and +Inf");
        assert_eq!(bounds(&coarse), bounds(&fine_again), "a point at the finer scale joins the series' scale");
        assert_ne!(bounds(&fine), bounds(&coarse), "the scale went down once, for good");
    }

    /// Exemplars go where Prometheus looks for them: a counter's on its `_total` series, a histogram's on the
    /// `_bucket` series whose bound holds the value (the largest on `+Inf`), with the trace and span IDs as labels.
    #[test]
    fn exemplars_go_on_the_counter_and_on_the_bucket_that_holds_them() {
        use opentelemetry_proto::tonic::metrics::v1::{exemplar, Exemplar, Histogram, HistogramDataPoint};
        let exemplar = |value: f64, id: u8| Exemplar {
            time_unix_nano: 2_000_000_000,
            span_id: vec![id; 8],
            trace_id: vec![id; 16],
            value: Some(exemplar::Value::AsDouble(value)),
            ..Default::default()
        };
        let histogram = Metric {
            name: "latency".into(),
            unit: "ms".into(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    time_unix_nano: 2_000_000_000,
                    count: 3,
                    sum: Some(10.0),
                    bucket_counts: vec![1, 1, 1],
                    explicit_bounds: vec![1.0, 5.0],
                    exemplars: vec![exemplar(7.0, 2), exemplar(0.5, 1)],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        let counter = Metric {
            name: "calls".into(),
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint {
                    time_unix_nano: 2_000_000_000,
                    value: Some(number_data_point::Value::AsInt(3)),
                    exemplars: vec![exemplar(4.0, 3)],
                    ..Default::default()
                }],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let mut backend = Prometheus::new(PrometheusConfig::default());
        let (_, _, request) = translated(&mut backend, &record(histogram));
        let (_, _, counters) = translated(&mut backend, &record(counter));
        let with_exemplars: Vec<(String, Option<String>, f64, String)> = request
            .timeseries
            .iter()
            .chain(&counters.timeseries)
            .flat_map(|s| {
                let get = |name: &str| s.labels.iter().find(|l| l.name == name).map(|l| l.value.clone());
                s.exemplars.iter().map(move |e| {
                    let trace = e.labels.iter().find(|l| l.name == "trace_id").unwrap().value.clone();
                    (get("__name__").unwrap(), get("le"), e.value, trace)
                })
            })
            .collect();
        assert_eq!(
            with_exemplars,
            [
                // Series in label order: `+Inf` sorts before `1`.
                ("latency_milliseconds_bucket".into(), Some("+Inf".into()), 7.0, "02".repeat(16)),
                ("latency_milliseconds_bucket".into(), Some("1".into()), 0.5, "01".repeat(16)),
                ("calls_total".into(), None, 4.0, "03".repeat(16)),
            ]
        );
    }

    /// One exponential histogram point of 100 000 buckets (a byte each in the record) would be 100 000 series with
    /// all their labels; downscaled to at most 160 buckets it stays about the size of its record, and its counts
    /// stay right.
    #[test]
    fn a_histogram_bomb_is_downscaled_not_multiplied() {
        let mut backend = Prometheus::new(PrometheusConfig::default());
        let record = record(exponential(vec![point(20, 0, 100_000, 0)]));
        let (batch, bytes, request) = translated(&mut backend, &record);
        let buckets: Vec<&TimeSeries> = request
            .timeseries
            .iter()
            .filter(|s| s.labels.iter().any(|l| l.name == "__name__" && l.value == "bomb_bucket"))
            .collect();
        assert!(buckets.len() <= points::MAX_EXPONENTIAL_BUCKETS + 1, "{} bucket series", buckets.len());
        assert!(bytes <= 64 * 1024, "translated to {bytes} bytes from a record of {}", record.len());
        let inf = buckets.iter().find(|s| s.labels.iter().any(|l| l.name == "le" && l.value == "+Inf")).unwrap();
        assert_eq!(inf.samples[0].value, 100_000.0);
        let highest = buckets.iter().map(|s| s.samples[0].value).fold(0.0, f64::max);
        assert_eq!(highest, 100_000.0, "the last finite bucket holds every count");
        assert!(batch.dropped.is_empty(), "{:?}", batch.dropped);
    }

    /// Points whose scale and offset give infinite or colliding bounds can't be classic buckets: dropped, counted.
    #[test]
    fn histograms_with_infinite_or_equal_bounds_are_rejected_with_a_reason() {
        let mut backend = Prometheus::new(PrometheusConfig::default());
        let points = vec![point(-10, 0, 3, 0), point(0, i32::MAX - 10, 5, 1), point(1000, 0, 2, 2), point(0, 0, 2, 3)];
        let (batch, _, request) = translated(&mut backend, &record(exponential(points)));
        assert_eq!(batch.dropped, vec![("invalid_histogram", 1); 3]);
        let pods: std::collections::BTreeSet<&str> = request
            .timeseries
            .iter()
            .flat_map(|s| s.labels.iter().filter(|l| l.name == "pod").map(|l| l.value.as_str()))
            .collect();
        assert_eq!(pods, std::collections::BTreeSet::from(["pod-0003-with-a-long-name"]), "the valid point is kept");
    }

    /// Many points of 160 buckets each: the record's translation stops at its bound (16 × max_bytes), and the points
    /// past it are counted; the translated batch is then full, so it is sealed.
    #[test]
    fn what_one_record_becomes_is_bounded() {
        let mut config = PrometheusConfig::default();
        config.batch.max_bytes = tailgate_config::ByteSize::b(16 * 1024);
        let limit = 16 * 16 * 1024;
        let mut backend = Prometheus::new(config);
        let points = (0..2000).map(|n| point(0, 0, 160, n)).collect();
        let record = record(exponential(points));
        let (batch, bytes, _) = translated(&mut backend, &record);
        // One point is at most 163 series of about 120 bytes.
        assert!(bytes <= limit + 163 * 160, "translated to {bytes} bytes, bound {limit}");
        let dropped: u64 = batch.dropped.iter().filter(|(r, _)| *r == "translation_limit").map(|(_, n)| n).sum();
        let kept = 2000 - dropped;
        assert!(dropped > 0 && kept > 0, "kept {kept}, dropped {dropped}");
        assert_eq!(batch.items, kept * 162, "every kept point whole: 160 buckets, +Inf and _count");
        assert!(batch.bytes >= 16 * 1024, "reported, so the worker seals the batch");
        assert!(batch.bytes.abs_diff(bytes) <= bytes / 10, "the estimate {} is near the real {bytes}", batch.bytes);
    }
}

//! The one translation of OTLP metric records into Prometheus series, shared by remote-write
//! ([`super::Prometheus`]) and the scrape endpoint ([`crate::scrape`]): names, labels, points, delta sums accumulated
//! per partition, `target_info` per resource.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;
use tailgate_proto::prometheus::Sample;

use super::labels::{insert, label_vec, ResourceLabels};
use super::points::{self, ms, Families, Out, Translated};
use super::state::{Advance, DeltaTotals, Scales, TargetInfo};
use crate::backend::Batch;
use crate::delivery::Tenant;

/// What the translation takes from an exporter's section.
#[derive(Clone, Debug)]
pub struct Translation {
    /// Every resource attribute as a label on every series (besides `target_info`).
    pub resource_to_telemetry_conversion: bool,
    /// Labels on every series: remote-write's `external_labels`, the scrape endpoint's `const_labels`.
    pub labels: BTreeMap<String, String>,
    /// Series of delta sums remembered (and as many resources' `target_info`).
    pub max_series: usize,
    /// Bytes of series one record may become; past it the record's points are dropped (`translation_limit`).
    pub max_record_bytes: usize,
    /// A delta series or a resource not updated for this long is forgotten (the Collector's `max_stale`).
    pub expiration: std::time::Duration,
    /// The series feed a store that keeps each partition's newest samples and is rebuilt from the records a
    /// partition owned again re-reads (the scrape endpoint), not a backend that keeps what it was sent: every record
    /// gives its resources' `target_info` (not only the first newer one), delta totals outlive a revoke, and a
    /// delta point read again gives its series' total as it stands instead of being dropped — so a re-read neither
    /// counts a delta twice nor leaves the series out.
    pub rebuilds_store: bool,
}

/// Translates records, remembering what the next records of the same partitions need.
pub struct Translator {
    translation: Translation,
    totals: DeltaTotals,
    target_info: TargetInfo,
    scales: Scales,
}

impl Translator {
    pub fn new(translation: Translation) -> Translator {
        let (limit, expiration) = (translation.max_series, translation.expiration);
        let totals = DeltaTotals::new(limit, expiration);
        let (target_info, scales) = (TargetInfo::new(limit, expiration), Scales::new(limit, expiration));
        Translator { translation, totals, target_info, scales }
    }

    /// Adds the series (and exemplars) of one record of `partition` and `tenant` to `items`, and notes its metric families in
    /// `families` if given. `Err` is a record that is not OTLP metric data.
    pub fn add(
        &mut self,
        items: &mut Translated,
        families: Option<&mut Families>,
        partition: i32,
        tenant: &Tenant,
        payload: &[u8],
    ) -> Result<Batch, String> {
        let request = ExportMetricsServiceRequest::decode(payload).map_err(|e| format!("not OTLP metric data: {e}"))?;
        let limit = self.translation.max_record_bytes;
        let now = std::time::Instant::now();
        let mut out = Out {
            items,
            batch: Batch::default(),
            totals: &mut self.totals,
            scales: &mut self.scales,
            now,
            rebuilds_store: self.translation.rebuilds_store,
            partition,
            tenant,
            limit,
            families,
        };
        for resource_metrics in &request.resource_metrics {
            let attributes = resource_metrics.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or_default();
            let resource = ResourceLabels::new(attributes, &self.translation);
            let mut latest = 0u64;
            for scope_metrics in &resource_metrics.scope_metrics {
                let mut base = resource.base.clone();
                if let Some(scope) = &scope_metrics.scope {
                    insert(&mut base, "otel_scope_name", &scope.name);
                    insert(&mut base, "otel_scope_version", &scope.version);
                }
                // As the Collector's `prometheus` exporter (seen side by side with v0.162.0).
                insert(&mut base, "otel_scope_schema_url", &scope_metrics.schema_url);
                for metric in &scope_metrics.metrics {
                    latest = latest.max(out.metric(metric, &base));
                }
            }
            if let Some(mut info) = resource.target_info {
                info.insert("__name__".into(), "target_info".into());
                let labels = label_vec(info);
                let time = ms(latest);
                if latest > 0 {
                    let advance = match self.translation.rebuilds_store {
                        true => Advance::Send,
                        false => self.target_info.advance(tenant, &labels, time, now),
                    };
                    match advance {
                        Advance::Send => {
                            out.batch.bytes += points::series_bytes(&labels) + 20;
                            out.items.series.entry(labels).or_default().push(Sample { value: 1.0, timestamp: time });
                            out.batch.items += 1;
                        }
                        Advance::Old => {}
                        Advance::Limit => out.batch.dropped.push(("target_info_limit", 1)),
                    }
                }
            }
        }
        Ok(out.batch)
    }

    /// Forgets what was learnt from `partitions`' records (delta totals): their next owner reads them again.
    pub fn revoked(&mut self, partitions: &[i32]) {
        if !self.translation.rebuilds_store {
            self.totals.revoke(partitions);
        }
    }
}

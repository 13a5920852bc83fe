//! Where an exporter's records come from: its consumer group, or a time range for `tailgate replay`.

use tailgate_kafka::KafkaConfig;

use crate::exporter::ExporterError;

/// Where an exporter's records come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// Its consumer group, from the committed offsets: the normal mode.
    Group,
    /// A time range (Unix milliseconds of record time), read through a throw-away consumer group and never
    /// committed: `tailgate replay`. Each partition ends as `tailgate_kafka::Ends` says — not at its first record
    /// stamped after `to_ms`, which a clock that ran ahead may have written mid-range; such records are skipped.
    Range { from_ms: i64, to_ms: Option<i64> },
}

/// Every partition of `topic` from its first record at or after `from_ms`, where each ends
/// ([`tailgate_kafka::Range::ends`]), and how many records lie up to `to_ms` (or the partitions' ends), for progress.
pub(crate) async fn range_start(
    kafka: &KafkaConfig,
    topic: &str,
    from_ms: i64,
    to_ms: Option<i64>,
) -> Result<tailgate_kafka::Range, ExporterError> {
    Ok(tailgate_kafka::time_range(kafka, topic, from_ms, to_ms).await?)
}

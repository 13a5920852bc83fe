//! Metric names of the exporter workers. Every series has an `exporter` label: the exporter's name (`jaeger`,
//! `prometheus_remote_write`, `loki`, `prometheus` for the scrape endpoint).

pub const RECORDS: &str = "tailgate_exporter_records_total";
pub const ITEMS: &str = "tailgate_exporter_sent_items_total";
pub const REJECTED_ITEMS: &str = "tailgate_exporter_rejected_items_total";
pub const TRUNCATED: &str = "tailgate_exporter_truncated_lines_total";
pub const DEAD_LETTERS: &str = "tailgate_exporter_dead_letter_records_total";
pub const RETRIES: &str = "tailgate_exporter_retries_total";
pub const REQUEST_DURATION: &str = "tailgate_exporter_request_duration_seconds";
pub const BACKEND_UP: &str = "tailgate_exporter_backend_up";
pub const BACKEND_DOWN_SINCE: &str = "tailgate_exporter_backend_down_since_seconds";
pub const LAG_RECORDS: &str = "tailgate_exporter_consumer_lag_records";
pub const LAG_SECONDS: &str = "tailgate_exporter_lag_seconds";
pub const PAUSES: &str = "tailgate_exporter_fetch_pauses_total";
pub const SCRAPE_SERIES: &str = "tailgate_exporter_scrape_series";
pub const SCRAPE_EXPIRED: &str = "tailgate_exporter_scrape_expired_series_total";

/// Every name above, for checks that dashboards and alerts query real series.
pub const ALL: &[&str] = &[
    RECORDS,
    ITEMS,
    REJECTED_ITEMS,
    TRUNCATED,
    DEAD_LETTERS,
    RETRIES,
    REQUEST_DURATION,
    BACKEND_UP,
    BACKEND_DOWN_SINCE,
    LAG_RECORDS,
    LAG_SECONDS,
    PAUSES,
    SCRAPE_SERIES,
    SCRAPE_EXPIRED,
];

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(RECORDS, "Kafka records settled, by outcome (delivered, dead_lettered).");
    describe_counter!(ITEMS, "Spans, samples or log lines the backend accepted.");
    describe_counter!(
        REJECTED_ITEMS,
        "Items not delivered, by reason: refused by the backend (partial success, too_old, bad_request, ...) or not \
         expressible for it (invalid_name, delta_histogram, line_too_long, ...)."
    );
    describe_counter!(TRUNCATED, "Log lines cut to max_line_bytes.");
    describe_counter!(DEAD_LETTERS, "Records written to the dead-letter topic, by reason.");
    describe_counter!(RETRIES, "Requests retried because the backend was down, overloaded or slow.");
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Backend request latency, by outcome (accepted, rejected, retry)."
    );
    describe_gauge!(BACKEND_UP, "1 while the backend answers, 0 while requests to it are being retried.");
    describe_gauge!(BACKEND_DOWN_SINCE, "Unix time the current outage began; 0 while up.");
    describe_gauge!(LAG_RECORDS, "Records behind the end of each partition, by partition.");
    describe_gauge!(LAG_SECONDS, "Age of the oldest record not yet delivered, by partition (0 when none waits).");
    describe_counter!(PAUSES, "Times fetching paused because requests were not being accepted.");
    describe_gauge!(SCRAPE_SERIES, "Series the scrape endpoint serves (those of the partitions this worker owns).");
    describe_counter!(SCRAPE_EXPIRED, "Series no longer served because they were not updated for metric_expiration.");
}

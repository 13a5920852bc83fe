//! The sampler's own metrics, and the counters a test or an operator reads while a worker runs.

use std::sync::atomic::AtomicU64;

pub const TRACES: &str = "tailgate_sampler_traces_total";
pub const SPANS: &str = "tailgate_sampler_spans_total";
pub const LATE_SPANS: &str = "tailgate_sampler_late_spans_total";
pub const UNDECODABLE: &str = "tailgate_sampler_undecodable_records_total";
pub const EARLY_DECISIONS: &str = "tailgate_sampler_early_decisions_total";
pub const BUFFERED_BYTES: &str = "tailgate_sampler_buffered_bytes";
pub const REVOCATIONS: &str = "tailgate_sampler_revocations_total";
pub const PAUSES: &str = "tailgate_sampler_fetch_pauses_total";
pub const BUFFERED_TRACES: &str = "tailgate_sampler_buffered_traces";
/// Event-time seconds from a trace's first span to its decision.
pub const DECISION_DELAY: &str = "tailgate_sampler_decision_delay_duration_seconds";
/// Decisions forgotten to keep the decision cache within `decision_cache_bytes`.
pub const DECISION_CACHE_EVICTIONS: &str = "tailgate_sampler_decision_cache_evictions_total";
/// Spans the sampler could not pass on, by `reason`: `invalid_trace_id` (not 16 bytes: belongs to no trace),
/// `invalid_id` and `too_large` (a kept span the sampled topic's records cannot carry).
pub const INVALID_SPANS: &str = "tailgate_sampler_invalid_spans_total";
/// Spans counted in the RED overflow series because their partition reached `max_series_per_partition`.
pub const RED_OVERFLOW_SPANS: &str = "tailgate_sampler_red_overflow_spans_total";
/// Calls counted in the service graph's overflow series because their partition reached
/// `max_edges_per_partition`.
pub const SERVICE_GRAPH_OVERFLOW: &str = "tailgate_sampler_service_graph_overflow_calls_total";
/// Dry run (`sampler.dry_run`): traces by what the policies would have done (`would` = keep or drop) and the
/// policy that would have kept them.
pub const DRY_RUN_TRACES: &str = "tailgate_sampler_dry_run_traces_total";
/// The generation of the running policies: 1 at start, one more for each reload that was taken.
pub const CONFIG_GENERATION: &str = "tailgate_sampler_config_generation";
/// Reloads refused because the new configuration was invalid (the running policies stay).
pub const CONFIG_RELOAD_FAILURES: &str = "tailgate_sampler_config_reload_failures_total";
/// Records whose timestamp was ahead of the wall clock, taken as now.
pub const CLAMPED_TIMESTAMPS: &str = "tailgate_sampler_clamped_timestamps_total";
/// Records behind the partition's end, by `partition`, as librdkafka's statistics report it.
pub const CONSUMER_LAG: &str = "tailgate_sampler_consumer_lag_records";

/// Every metric name above, for checks that dashboards and alerts query real series.
pub const METRICS: &[&str] = &[
    TRACES,
    SPANS,
    LATE_SPANS,
    UNDECODABLE,
    EARLY_DECISIONS,
    BUFFERED_BYTES,
    REVOCATIONS,
    PAUSES,
    BUFFERED_TRACES,
    DECISION_DELAY,
    CLAMPED_TIMESTAMPS,
    RED_OVERFLOW_SPANS,
    SERVICE_GRAPH_OVERFLOW,
    DRY_RUN_TRACES,
    CONFIG_GENERATION,
    CONFIG_RELOAD_FAILURES,
    INVALID_SPANS,
    DECISION_CACHE_EVICTIONS,
    CONSUMER_LAG,
];

/// Registers descriptions, so `/metrics` explains every series.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(TRACES, "Traces decided, by decision and keeping policy.");
    describe_counter!(SPANS, "Spans of decided traces, by decision.");
    describe_counter!(LATE_SPANS, "Spans that arrived after their trace was decided, by decision.");
    describe_counter!(UNDECODABLE, "Records of the spans topic the sampler cannot read, sent to the dead-letter topic, by reason (undecodable, unknown_contract).");
    describe_counter!(
        EARLY_DECISIONS,
        "Traces decided before decision_wait, by reason (trace_spans, trace_bytes, memory)."
    );
    describe_gauge!(BUFFERED_BYTES, Unit::Bytes, "Encoded span bytes awaiting a decision.");
    describe_gauge!(BUFFERED_TRACES, "Traces awaiting a decision.");
    describe_counter!(REVOCATIONS, "Rebalances that took partitions from this worker.");
    describe_counter!(PAUSES, "Times fetching paused because output was not acknowledged.");
    describe_histogram!(DECISION_DELAY, Unit::Seconds, "Event time from a trace's first span to its decision.");
    describe_counter!(
        CLAMPED_TIMESTAMPS,
        "Records whose timestamp was implausibly far ahead of the wall clock and was taken as now."
    );
    describe_counter!(
        RED_OVERFLOW_SPANS,
        "Spans counted in the RED overflow series (otel.metric.overflow=true): a partition reached its series limit."
    );
    describe_counter!(
        DRY_RUN_TRACES,
        "Dry run: traces kept whatever the policies say, by what they would have done (would=keep|drop) and the \
         policy that would have kept them."
    );
    describe_gauge!(CONFIG_GENERATION, "Generation of the running policies: 1 at start, +1 per reload taken.");
    describe_counter!(
        CONFIG_RELOAD_FAILURES,
        "Policy reloads refused because the new configuration was invalid; the running policies stay."
    );
    describe_counter!(
        SERVICE_GRAPH_OVERFLOW,
        "Calls counted in the service graph's overflow series (otel.metric.overflow=true): a partition reached its \
         edge limit."
    );
    describe_counter!(
        INVALID_SPANS,
        "Spans not passed on, by reason: invalid_trace_id (belongs to no trace), invalid_id or too_large (a kept span \
         the sampled topic cannot carry)."
    );
    describe_counter!(
        DECISION_CACHE_EVICTIONS,
        "Decisions forgotten to stay within sampler.decision_cache_bytes; a late span of such a trace is decided afresh."
    );
    describe_gauge!(CONSUMER_LAG, "Records behind the end of each partition of the spans topic.");
}

/// Counters a test or an operator can read while the worker runs.
#[derive(Debug, Default)]
pub struct SamplerStats {
    /// Rebalances that took partitions away from this worker.
    pub revocations: AtomicU64,
    /// The most encoded span bytes buffered at once, after the memory bound was enforced.
    pub max_buffered_bytes: AtomicU64,
    /// Output bytes sent to Kafka and not yet acknowledged.
    pub output_bytes_in_flight: AtomicU64,
    /// Times fetching was paused because output was not being acknowledged.
    pub pauses: AtomicU64,
    /// Records whose timestamp was ahead of the wall clock and was taken as now instead.
    pub clamped_timestamps: AtomicU64,
    /// Spans not passed on (see [`INVALID_SPANS`]).
    pub invalid_spans: AtomicU64,
    /// Partitions this worker owns now.
    pub owned_partitions: AtomicU64,
    /// Decisions loaded from the decisions topic at assignments (at most the cache's capacity each time).
    pub decisions_loaded: AtomicU64,
    /// Traces decided, and of them kept, with their spans (late spans of kept traces included).
    pub traces_decided: AtomicU64,
    pub traces_kept: AtomicU64,
    pub spans_kept: AtomicU64,
    /// Resample: records of the range read, and the estimate of how many there are.
    pub records_read: AtomicU64,
    pub records_expected: AtomicU64,
    /// Resample: spans of traces the live sampler kept (delivered already), left out.
    pub already_kept_spans: AtomicU64,
    /// Resample: every trace of the range was decided and what was kept acknowledged by Kafka.
    pub completed: std::sync::atomic::AtomicBool,
}

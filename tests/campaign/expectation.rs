//! Which acknowledged traces the samplers must keep, computed from the policies the campaign configures: every
//! trace with an acknowledged ERROR span or slow span, and exactly the ordinary traces the probabilistic policy's
//! hash keeps.
//!
//! The probabilistic policy is deterministic, as the OpenTelemetry Collector's is: FNV-1a 64 over the salt then the
//! 16 trace-ID bytes, kept when the hash is at most `percentage / 100 × u64::MAX`. It is written out again here from
//! that description (not imported), so the test checks the sampler against the spec, not against itself.

use std::collections::{BTreeMap, HashSet};

use super::ledger::{Sent, SpanKey};

pub const PERCENTAGE: f64 = 10.0;
pub fn probabilistic_keeps(trace_id_hex: &str) -> bool {
    crate::harness::sampling::probabilistic_keeps(&hex::decode(trace_id_hex).unwrap(), PERCENTAGE)
}

/// What the sampled stage must hold, and what it may.
#[derive(Default)]
pub struct Kept {
    /// Acknowledged spans of the traces that must be kept, whole.
    pub must: HashSet<SpanKey>,
    /// Traces by why they are kept: `error`, `slow`, `probabilistic`.
    pub traces: BTreeMap<&'static str, HashSet<String>>,
    /// Ordinary traces the hash drops: none of their spans may be there (unless a span of another kind of theirs
    /// was sent unacknowledged, see `indeterminate`).
    pub dropped: HashSet<String>,
    /// Traces whose error or slow span was sent but not acknowledged, so either decision is right.
    pub indeterminate: HashSet<String>,
    /// Error or slow traces whose deciding span was acknowledged more than the decision wait after the root was
    /// first sent: tail sampling may rightly have decided without it (late spans follow the decision).
    pub late: HashSet<String>,
}

pub fn kept(sent: &Sent, decision_wait_s: f64) -> Kept {
    struct Trace {
        first_sent: f64,
        deciding: Option<(&'static str, Option<f64>)>,
        kind_unacked: bool,
    }
    let mut traces: BTreeMap<&str, Trace> = BTreeMap::new();
    for ((trace, _, _), span) in &sent.spans {
        let t = traces.entry(trace).or_insert(Trace { first_sent: f64::MAX, deciding: None, kind_unacked: false });
        t.first_sent = t.first_sent.min(span.first_sent);
        if !span.root && span.kind != "ok" {
            let kind = if span.kind == "error" { "error" } else { "slow" };
            match span.acked_at {
                Some(at) => t.deciding = Some((kind, Some(at))),
                None => t.kind_unacked = true,
            }
        }
    }
    let mut kept = Kept::default();
    for (trace, t) in &traces {
        let id = (*trace).to_owned();
        let reason = match t.deciding {
            Some((_, Some(at))) if at - t.first_sent > decision_wait_s => {
                kept.late.insert(id);
                continue;
            }
            Some((kind, _)) => kind,
            None if probabilistic_keeps(trace) => "probabilistic",
            None if t.kind_unacked => {
                kept.indeterminate.insert(id);
                continue;
            }
            None => {
                kept.dropped.insert(id);
                continue;
            }
        };
        kept.traces.entry(reason).or_default().insert(id);
    }
    let keep: HashSet<&String> = kept.traces.values().flatten().collect();
    kept.must = sent.acked_spans().into_iter().filter(|(t, _, _)| keep.contains(t)).collect();
    kept
}

//! The ledger: what the client saw acknowledged, against what each stage holds, in the Jepsen vocabulary.
//!
//! * **acknowledged**: in an export call the SDK's exporter returned SUCCESS for;
//! * **present**: acknowledged and found at the stage (at least once);
//! * **lost**: acknowledged and not found — the number that must be 0;
//! * **duplicated**: copies beyond the first, of anything found;
//! * **unexpected**: found, but never even sent (in no export call at all). What was sent and not acknowledged
//!   (a timeout after the gateway wrote it) may or may not be there; it is counted as `indeterminate`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde_json::Value;

/// A span as the ledger knows it: trace ID and span ID (hex, as the SDK prints them) and its content —
/// `name|status code|campaign.kind|start ns|end ns` — so a span found with its status or attributes stripped, or its
/// times changed, is not present: it is `unexpected`, and the span sent is `lost`.
pub type SpanKey = (String, String, String);

/// The content part of a [`SpanKey`] of a span as a stage holds it.
pub fn span_content(span: &opentelemetry_proto::tonic::trace::v1::Span) -> String {
    let kind = span
        .attributes
        .iter()
        .find(|kv| kv.key == "campaign.kind")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("ok");
    let status = span.status.as_ref().map_or(0, |s| s.code);
    format!("{}|{status}|{kind}|{}|{}", span.name, span.start_time_unix_nano, span.end_time_unix_nano)
}

/// A log record as the ledger knows it: `body|level|trace ID|span ID|service|tenant` (IDs in hex, as the SDK prints
/// them; an unset one all zeros; the default tenant empty) — so a line found without its trace, under another
/// service or another tenant, is not present.
pub fn log_key(body: &str, level: &str, trace: &str, span: &str, service: &str, tenant: Option<&str>) -> String {
    let (trace, span) =
        (if trace.is_empty() { ZERO_TRACE } else { trace }, if span.is_empty() { ZERO_SPAN } else { span });
    format!("{body}|{level}|{trace}|{span}|{service}|{}", tenant.unwrap_or(""))
}

const ZERO_TRACE: &str = "00000000000000000000000000000000";
const ZERO_SPAN: &str = "0000000000000000";

/// The level Grafana shows for a severity number: the log data model's ranges. (The exporter falls back to the
/// severity text when the number is unset; the campaign's client always sets the number, so this oracle needs
/// only the ranges.)
pub fn level(severity_number: i32) -> &'static str {
    match severity_number {
        1..=4 => "trace",
        5..=8 => "debug",
        9..=12 => "info",
        13..=16 => "warn",
        17..=20 => "error",
        21..=24 => "fatal",
        _ => "unknown",
    }
}

/// One export call of the client.
#[derive(Debug)]
pub struct Call {
    pub signal: String,
    pub ok: bool,
    pub start: f64,
    pub end: f64,
    pub items: Vec<Value>,
}

#[derive(Clone, Debug)]
pub struct SentSpan {
    /// `error`, `slow` or `ok`: the kind of the trace the span belongs to.
    pub kind: String,
    pub root: bool,
    /// When the first call that carried it started, and when the first successful one ended (Unix seconds).
    pub first_sent: f64,
    pub acked_at: Option<f64>,
}

/// Everything the client sent, by signal.
#[derive(Default)]
pub struct Sent {
    pub spans: HashMap<SpanKey, SentSpan>,
    /// Log records (see [`log_key`]): whether acknowledged.
    pub logs: HashMap<String, bool>,
    /// Log records: when the first call that carried it started.
    pub log_first_sent: HashMap<String, f64>,
    /// Every export call: signal, acknowledged, start, end (Unix seconds).
    pub call_times: Vec<(String, bool, f64, f64)>,
    /// Every `campaign.orders` delta sent: when its call started, its value.
    pub orders_sent: Vec<(f64, f64)>,
    /// Sum of the acknowledged deltas of `campaign.orders`, and of those sent but not acknowledged.
    pub orders_acked: f64,
    pub orders_unacked: f64,
    /// The largest cumulative count of `campaign.latency` acknowledged, and the largest sent at all.
    pub latency_count_acked: u64,
    pub latency_count_sent: u64,
    pub calls: BTreeMap<(String, bool), usize>,
}

impl Sent {
    pub fn read(path: &Path) -> Sent {
        let text = std::fs::read_to_string(path).unwrap();
        let mut sent = Sent::default();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let call = Call {
                signal: v["signal"].as_str().unwrap().to_owned(),
                ok: v["ok"].as_bool().unwrap(),
                start: v["start"].as_f64().unwrap(),
                end: v["end"].as_f64().unwrap(),
                items: v["items"].as_array().unwrap().clone(),
            };
            sent.add(call);
        }
        sent
    }

    fn add(&mut self, call: Call) {
        *self.calls.entry((call.signal.clone(), call.ok)).or_default() += 1;
        self.call_times.push((call.signal.clone(), call.ok, call.start, call.end));
        match call.signal.as_str() {
            "spans" => {
                for item in &call.items {
                    let key = (
                        item[0].as_str().unwrap().to_owned(),
                        item[1].as_str().unwrap().to_owned(),
                        item[4].as_str().unwrap().to_owned(),
                    );
                    let span = self.spans.entry(key).or_insert_with(|| SentSpan {
                        kind: item[2].as_str().unwrap().to_owned(),
                        root: item[3].as_bool().unwrap(),
                        first_sent: call.start,
                        acked_at: None,
                    });
                    span.first_sent = span.first_sent.min(call.start);
                    if call.ok && span.acked_at.is_none() {
                        span.acked_at = Some(call.end);
                    }
                }
            }
            "logs" => {
                for item in &call.items {
                    let key = log_key(
                        item[0].as_str().unwrap(),
                        level(item[1].as_i64().unwrap() as i32),
                        item[2].as_str().unwrap(),
                        item[3].as_str().unwrap(),
                        item[4].as_str().unwrap(),
                        None,
                    );
                    *self.logs.entry(key.clone()).or_default() |= call.ok;
                    let first = self.log_first_sent.entry(key).or_insert(call.start);
                    *first = first.min(call.start);
                }
            }
            "metrics" => {
                for item in &call.items {
                    match (item[0].as_str().unwrap(), item[1].as_str().unwrap()) {
                        ("campaign.orders", "sum") => {
                            let value = item[2].as_f64().unwrap();
                            self.orders_sent.push((call.start, value));
                            match call.ok {
                                true => self.orders_acked += value,
                                false => self.orders_unacked += value,
                            }
                        }
                        ("campaign.latency", "histogram") => {
                            let count = item[2].as_u64().unwrap();
                            self.latency_count_sent = self.latency_count_sent.max(count);
                            if call.ok {
                                self.latency_count_acked = self.latency_count_acked.max(count);
                            }
                        }
                        _ => {}
                    }
                }
            }
            other => panic!("unknown signal {other} in the ledger"),
        }
    }

    /// The acknowledged spans.
    pub fn acked_spans(&self) -> HashSet<SpanKey> {
        self.spans.iter().filter(|(_, s)| s.acked_at.is_some()).map(|(k, _)| k.clone()).collect()
    }

    pub fn acked_logs(&self) -> HashSet<String> {
        self.logs.iter().filter(|(_, ok)| **ok).map(|(k, _)| k.clone()).collect()
    }
}

/// One row of the table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row {
    pub signal: String,
    pub stage: String,
    pub acknowledged: u64,
    pub present: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub unexpected: u64,
    pub indeterminate: u64,
}

/// Compares `expected` (acknowledged, must be there), `sent` (anything the client put in a call) with `found` (every
/// copy at the stage, duplicates included).
pub fn compare<K: std::hash::Hash + Eq + Clone>(
    signal: &str,
    stage: &str,
    expected: &HashSet<K>,
    sent: &HashSet<K>,
    found: &[K],
) -> (Row, Vec<K>) {
    let mut copies: HashMap<&K, u64> = HashMap::new();
    for key in found {
        *copies.entry(key).or_default() += 1;
    }
    let lost: Vec<K> = expected.iter().filter(|k| !copies.contains_key(k)).cloned().collect();
    let row = Row {
        signal: signal.to_owned(),
        stage: stage.to_owned(),
        acknowledged: expected.len() as u64,
        present: (expected.len() - lost.len()) as u64,
        lost: lost.len() as u64,
        duplicated: copies.values().map(|c| c - 1).sum(),
        unexpected: copies.keys().filter(|k| !sent.contains(k)).count() as u64,
        indeterminate: copies.keys().filter(|k| sent.contains(k) && !expected.contains(k)).count() as u64,
    };
    (row, lost)
}

/// Copies at a stage beyond what the faults explain. Copies come from re-reading after a fault: a worker that
/// restarts, or loses or gets back partitions, reads again what it had not committed; a client whose call failed
/// retries it; a producer whose send failed sends again. So every copy beyond the first must be of an item first sent
/// within a fault's window (`windows`, Unix seconds), and an item may have at most `allowed(item, indices of the
/// windows holding it)` extra copies (each stage states its own: see the campaign's `check`). Returns the
/// duplicates, those beyond that bound, and a few of the latter.
pub fn unexplained_copies<K: std::hash::Hash + Eq + std::fmt::Debug>(
    found: &[K],
    first_sent: impl Fn(&K) -> Option<f64>,
    windows: &[(f64, f64)],
    allowed: impl Fn(&K, &[usize]) -> u64,
) -> (u64, u64, Vec<String>) {
    let mut copies: HashMap<&K, u64> = HashMap::new();
    for key in found {
        *copies.entry(key).or_default() += 1;
    }
    let (mut duplicated, mut beyond, mut examples) = (0, 0, Vec::new());
    for (key, n) in copies {
        duplicated += n - 1;
        let Some(sent) = first_sent(key) else { continue };
        let holding: Vec<usize> =
            (0..windows.len()).filter(|i| (windows[*i].0..=windows[*i].1).contains(&sent)).collect();
        let allowed = allowed(key, &holding);
        let holding = holding.len();
        if n - 1 > allowed {
            beyond += n - 1 - allowed;
            if examples.len() < 5 {
                examples.push(format!(
                    "{key:?}: {n} copies, first sent at {sent:.1}, {holding} fault windows, {allowed} extra allowed"
                ));
            }
        }
    }
    (duplicated, beyond, examples)
}

/// How many times each item occurs in `found`.
pub fn copies<K: std::hash::Hash + Eq + Clone>(found: &[K]) -> HashMap<K, u64> {
    let mut copies = HashMap::new();
    for key in found {
        *copies.entry(key.clone()).or_default() += 1;
    }
    copies
}

/// The table, as the campaign prints it.
pub fn print(rows: &[Row]) {
    eprintln!(
        "{:<8} {:<28} {:>12} {:>10} {:>6} {:>10} {:>10} {:>13}",
        "signal", "stage", "acknowledged", "present", "lost", "duplicated", "unexpected", "indeterminate"
    );
    for r in rows {
        eprintln!(
            "{:<8} {:<28} {:>12} {:>10} {:>6} {:>10} {:>10} {:>13}",
            r.signal, r.stage, r.acknowledged, r.present, r.lost, r.duplicated, r.unexpected, r.indeterminate
        );
    }
}

//! The store as a scrape response: Prometheus's text format 0.0.4, or OpenMetrics 1.0 to a scraper that asks for it.
//! Series are grouped by metric family under its `# HELP` and `# TYPE`, as both formats require; within a family, a
//! histogram's or summary's series of one label set are together, buckets in `le` order.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tailgate_proto::prometheus::Label;

use super::store::{name, Point, Store};
use crate::prometheus::Kind;

/// The two exposition formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    OpenMetrics,
}

impl Format {
    /// OpenMetrics if it is enabled and the scraper's `Accept` names it (Prometheus's does, first), else text.
    pub fn negotiate(accept: Option<&str>, open_metrics: bool) -> Format {
        let asks = accept.is_some_and(|accept| accept.contains("application/openmetrics-text"));
        if open_metrics && asks {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One family's declaration and series.
struct Block<'a> {
    kind: &'static str,
    help: &'a str,
    series: Vec<(&'a Vec<Label>, &'a Point)>,
}

/// Renders every series of `store`; with `timestamps`, each sample carries its point's time.
pub fn render(store: &Store, format: Format, timestamps: bool) -> String {
    let mut blocks: BTreeMap<String, Block<'_>> = BTreeMap::new();
    for (labels, point) in store.iter() {
        let metric = name(labels);
        let (family, kind, help) = match (metric, store.family(metric)) {
            ("target_info", _) => match format {
                Format::Text => ("target_info".to_owned(), "gauge", ""),
                Format::OpenMetrics => ("target".to_owned(), "info", ""),
            },
            (_, Some((family, declared))) => {
                let kind = match declared.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram => "histogram",
                    Kind::Summary => "summary",
                };
                // OpenMetrics names a counter family without the `_total` of its samples.
                let family = match (format, declared.kind) {
                    (Format::OpenMetrics, Kind::Counter) => family.strip_suffix("_total").unwrap_or(family),
                    _ => family,
                };
                (family.to_owned(), kind, declared.help.as_str())
            }
            (_, None) => (
                metric.to_owned(),
                match format {
                    Format::Text => "untyped",
                    Format::OpenMetrics => "unknown",
                },
                "",
            ),
        };
        blocks.entry(family).or_insert_with(|| Block { kind, help, series: Vec::new() }).series.push((labels, point));
    }
    let mut out = String::with_capacity(store.len() * 96);
    for (family, mut block) in blocks {
        // A total order even for a NaN bound (`le="NaN"`), which `partial_cmp` would leave unordered.
        block.series.sort_by(|a, b| {
            let (a, b) = (order(a.0), order(b.0));
            a.0.cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.total_cmp(&b.2))
        });
        if !block.help.is_empty() {
            let _ = writeln!(out, "# HELP {family} {}", escape_help(block.help, format));
        }
        let _ = writeln!(out, "# TYPE {family} {}", block.kind);
        for (labels, point) in block.series {
            sample(&mut out, labels, point, format, timestamps);
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// Sort key inside a family: the label set without `__name__`, `le` and `quantile`, then buckets (by `le`), the
/// quantiles (by `quantile`) and the plain series, then `_count` and `_sum`.
fn order(labels: &[Label]) -> (Vec<(&str, &str)>, u8, f64) {
    let metric = name(labels);
    let rest: Vec<(&str, &str)> = labels
        .iter()
        .filter(|l| !matches!(l.name.as_str(), "__name__" | "le" | "quantile"))
        .map(|l| (l.name.as_str(), l.value.as_str()))
        .collect();
    let bound = |key: &str| {
        labels.iter().find(|l| l.name == key).map(|l| match l.value.as_str() {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap_or(f64::NAN),
        })
    };
    let rank = if metric.ends_with("_count") {
        2
    } else if metric.ends_with("_sum") {
        3
    } else {
        1
    };
    (rest, rank, bound("le").or_else(|| bound("quantile")).unwrap_or(0.0))
}

fn sample(out: &mut String, labels: &[Label], point: &Point, format: Format, timestamps: bool) {
    out.push_str(name(labels));
    let mut first = true;
    for label in labels.iter().filter(|l| l.name != "__name__") {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{}=\"{}\"", label.name, escape_value(&label.value));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(point.value));
    if timestamps {
        match format {
            Format::Text => {
                let _ = write!(out, " {}", point.timestamp);
            }
            Format::OpenMetrics => out.push_str(&format!(" {}", seconds(point.timestamp))),
        }
    }
    // OpenMetrics carries exemplars, on a counter's `_total` and a histogram's `_bucket` samples.
    let metric = name(labels);
    if let (Format::OpenMetrics, Some(exemplar)) = (format, &point.exemplar) {
        if metric.ends_with("_total") || metric.ends_with("_bucket") {
            let pairs: Vec<String> =
                exemplar.labels.iter().map(|l| format!("{}=\"{}\"", l.name, escape_value(&l.value))).collect();
            let _ =
                write!(out, " # {{{}}} {} {}", pairs.join(","), number(exemplar.value), seconds(exemplar.timestamp));
        }
    }
    out.push('\n');
}

/// Unix milliseconds as OpenMetrics writes times: seconds with a fraction.
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A sample value as both formats write it: `NaN`, `+Inf`, `-Inf`, integers without a fraction.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value:?}")
    }
}

fn escape_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn escape_help(help: &str, format: Format) -> String {
    let mut escaped = String::with_capacity(help.len());
    for c in help.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '"' if format == Format::OpenMetrics => escaped.push_str("\\\""),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::{Families, Family, Series, Translated};
    use tailgate_proto::prometheus::Sample;

    fn labels(pairs: &[(&str, &str)]) -> Vec<Label> {
        let mut labels: Vec<Label> =
            pairs.iter().map(|(n, v)| Label { name: (*n).to_owned(), value: (*v).to_owned() }).collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        labels
    }

    fn store() -> Store {
        let mut store = Store::new(100);
        let mut series = Series::new();
        let mut add = |pairs: &[(&str, &str)], value: f64| {
            series.insert(labels(pairs), vec![Sample { value, timestamp: 1_500 }]);
        };
        add(&[("__name__", "orders_total"), ("method", "card")], 42.0);
        add(&[("__name__", "latency_seconds_bucket"), ("le", "0.5"), ("job", "shop")], 3.0);
        add(&[("__name__", "latency_seconds_bucket"), ("le", "+Inf"), ("job", "shop")], 6.0);
        add(&[("__name__", "latency_seconds_bucket"), ("le", "0.25"), ("job", "shop")], 1.0);
        add(&[("__name__", "latency_seconds_sum"), ("job", "shop")], 2.5);
        add(&[("__name__", "latency_seconds_count"), ("job", "shop")], 6.0);
        add(&[("__name__", "target_info"), ("job", "shop"), ("env", "a \"b\"\n")], 1.0);
        add(&[("__name__", "mystery")], f64::NAN);
        let mut families = Families::from([
            ("orders_total".to_owned(), Family { kind: Kind::Counter, help: "Orders\nplaced".into() }),
            ("latency_seconds".to_owned(), Family { kind: Kind::Histogram, help: String::new() }),
        ]);
        store.update(0, Translated { series, exemplars: Default::default() }, &mut families);
        store
    }

    #[test]
    fn the_text_format_groups_families_and_orders_buckets() {
        assert_eq!(
            render(&store(), Format::Text, false),
            "# TYPE latency_seconds histogram
latency_seconds_bucket{job=\"shop\",le=\"0.25\"} 1
latency_seconds_bucket{job=\"shop\",le=\"0.5\"} 3
latency_seconds_bucket{job=\"shop\",le=\"+Inf\"} 6
latency_seconds_count{job=\"shop\"} 6
latency_seconds_sum{job=\"shop\"} 2.5
# TYPE mystery untyped
mystery NaN
# HELP orders_total Orders\\nplaced
# TYPE orders_total counter
orders_total{method=\"card\"} 42
# TYPE target_info gauge
target_info{env=\"a \\\"b\\\"\\n\",job=\"shop\"} 1
"
        );
    }

    #[test]
    fn open_metrics_names_counter_and_info_families_and_ends_with_eof() {
        let text = render(&store(), Format::OpenMetrics, true);
        assert!(text.contains("# TYPE orders counter\norders_total{method=\"card\"} 42 1.500\n"), "{text}");
        assert!(text.contains("# TYPE target info\ntarget_info{"), "{text}");
        assert!(text.contains("# TYPE mystery unknown\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn open_metrics_carries_exemplars_on_buckets_and_counters_only() {
        let mut store = Store::new(10);
        let exemplar = tailgate_proto::prometheus::Exemplar {
            labels: vec![Label { name: "trace_id".into(), value: "ab".repeat(16) }],
            value: 0.43,
            timestamp: 1_700_000_000_123,
        };
        let mut translated = Translated::default();
        for name in ["latency_seconds_bucket", "queue_depth"] {
            let labels = labels(&[("__name__", name), ("le", "0.5")]);
            translated.series.insert(labels.clone(), vec![Sample { value: 3.0, timestamp: 1_500 }]);
            translated.exemplars.insert(labels, vec![exemplar.clone()]);
        }
        store.update(0, translated, &mut Families::new());
        let text = render(&store, Format::OpenMetrics, false);
        let trace = "ab".repeat(16);
        assert!(
            text.contains(&format!(
                "latency_seconds_bucket{{le=\"0.5\"}} 3 # {{trace_id=\"{trace}\"}} 0.43 1700000000.123\n"
            )),
            "{text}"
        );
        assert!(text.contains("queue_depth{le=\"0.5\"} 3\n"), "not on a gauge: {text}");
        assert!(!render(&store, Format::Text, false).contains("trace_id"), "the text format has no exemplars");
    }

    #[test]
    fn open_metrics_only_when_enabled_and_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus), true), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some(prometheus), false), Format::Text);
        assert_eq!(Format::negotiate(Some("text/plain"), true), Format::Text);
        assert_eq!(Format::negotiate(None, true), Format::Text);
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(42.0), "42");
        assert_eq!(number(-0.5), "-0.5");
        assert_eq!(number(1e20), "1e20");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
    }
}

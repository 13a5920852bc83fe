//! Prometheus metric names from OTLP names and units, as the OpenTelemetry–Prometheus compatibility specification
//! says: words joined by `_`, the unit appended in words (`s` → `seconds`, `By/s` → `bytes_per_second`), `_ratio`
//! for gauges of unit `1`, `_total` for counters.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
}

/// The Prometheus name of an OTLP metric, or `None` when nothing valid is left.
pub fn metric_name(name: &str, unit: &str, kind: Kind) -> Option<String> {
    let mut words: Vec<String> = name
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == ':'))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    if words.is_empty() {
        return None;
    }
    let unit = strip_annotations(unit);
    let (main, per) = match unit.split_once('/') {
        Some((main, per)) => (main.trim(), Some(per.trim())),
        None => (unit.trim(), None),
    };
    let main = main_unit(main);
    for word in main.split('_').filter(|w| !w.is_empty()) {
        if !words.iter().any(|w| w == word) {
            words.push(word.to_owned());
        }
    }
    if let Some(per) = per.map(per_unit).filter(|p| !p.is_empty()) {
        if !words.contains(&per) {
            words.push("per".into());
            words.push(per);
        }
    }
    if kind == Kind::Gauge && unit.trim() == "1" && words.last().map(String::as_str) != Some("ratio") {
        words.push("ratio".into());
    }
    if kind == Kind::Counter {
        words.retain(|w| w != "total");
        words.push("total".into());
    }
    let mut name = words.join("_");
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, '_');
    }
    Some(name)
}

fn strip_annotations(unit: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

fn main_unit(unit: &str) -> String {
    let known = match unit {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        "1" | "" => "",
        other => return sanitize_words(other),
    };
    known.to_owned()
}

fn per_unit(unit: &str) -> String {
    let known = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        other => return sanitize_words(other),
    };
    known.to_owned()
}

fn sanitize_words(text: &str) -> String {
    text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_specification() {
        let cases = [
            ("http.server.request.duration", "s", Kind::Histogram, "http_server_request_duration_seconds"),
            ("checkout.completed", "{checkout}", Kind::Counter, "checkout_completed_total"),
            ("checkout.value", "{cent}", Kind::Histogram, "checkout_value"),
            ("requests_total", "", Kind::Counter, "requests_total"),
            ("system.memory.usage", "By", Kind::Gauge, "system_memory_usage_bytes"),
            ("cpu.utilization", "1", Kind::Gauge, "cpu_utilization_ratio"),
            ("throughput", "By/s", Kind::Gauge, "throughput_bytes_per_second"),
            ("latency_seconds", "s", Kind::Histogram, "latency_seconds"),
            ("2xx.responses", "", Kind::Counter, "_2xx_responses_total"),
            ("traces.span.metrics.calls", "", Kind::Counter, "traces_span_metrics_calls_total"),
        ];
        for (name, unit, kind, expected) in cases {
            assert_eq!(metric_name(name, unit, kind).as_deref(), Some(expected), "{name} [{unit}]");
        }
        assert_eq!(metric_name("...", "s", Kind::Gauge), None);
    }
}

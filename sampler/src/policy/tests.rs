//! Every policy type on hand-built traces.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};

use super::*;
use crate::buffer::pending;

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_owned(), value: Some(AnyValue { value: Some(value) }) }
}

struct Spec {
    duration_ms: u64,
    error: bool,
    spans: usize,
    attributes: Vec<KeyValue>,
    resource: Vec<KeyValue>,
    trace_state: &'static str,
}

impl Default for Spec {
    fn default() -> Self {
        Spec { duration_ms: 100, error: false, spans: 3, attributes: vec![], resource: vec![], trace_state: "" }
    }
}

fn trace(spec: Spec) -> Vec<ResourceSpans> {
    let start = 1_700_000_000_000_000_000u64;
    let spans = (0..spec.spans)
        .map(|i| Span {
            trace_id: vec![9; 16],
            span_id: vec![i as u8 + 1; 8],
            start_time_unix_nano: start + i as u64,
            end_time_unix_nano: if i == 0 { start + spec.duration_ms * 1_000_000 } else { start + 10 },
            status: (spec.error && i == spec.spans - 1)
                .then(|| Status { code: status::StatusCode::Error as i32, message: String::new() }),
            attributes: if i == 0 { spec.attributes.clone() } else { vec![] },
            trace_state: spec.trace_state.to_owned(),
            ..Default::default()
        })
        .collect();
    vec![ResourceSpans {
        resource: Some(Resource { attributes: spec.resource, ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }]
}

fn policies(yaml: &str) -> Policies {
    let configs: Vec<PolicyConfig> = tailgate_config::from_yaml(yaml).unwrap();
    Policies::build(&configs).unwrap_or_else(|p| panic!("{p}"))
}

fn keeps(policies: &mut Policies, batches: &[ResourceSpans]) -> bool {
    policies.decide(&TraceView::new(&[9; 16], &pending(batches)), 0).keep
}

/// The seed's configuration: errors always, slow always, 10% of the rest.
const SEED: &str = "
- { name: errors-always, type: status_code, status_code: { status_codes: [ERROR] } }
- { name: slow-requests, type: latency, latency: { threshold_ms: 2000 } }
- { name: sample-rest, type: probabilistic, probabilistic: { sampling_percentage: 10 } }
";

#[test]
fn the_seed_policies_keep_errors_slow_and_a_tenth_of_the_rest() {
    let mut p = policies(SEED);
    let verdict = p.decide(&TraceView::new(&[9; 16], &pending(&trace(Spec { error: true, ..Default::default() }))), 0);
    assert_eq!((verdict.keep, verdict.policy.as_deref()), (true, Some("errors-always")));
    let verdict =
        p.decide(&TraceView::new(&[9; 16], &pending(&trace(Spec { duration_ms: 2500, ..Default::default() }))), 0);
    assert_eq!(verdict.policy.as_deref(), Some("slow-requests"));

    let batches = trace(Spec::default());
    let kept = (0..20_000u32)
        .filter(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            id[15] = 1;
            p.decide(&TraceView::new(&id, &pending(&batches)), 0).keep
        })
        .count();
    assert!((1_700..2_300).contains(&kept), "kept {kept} of 20000 fast, successful traces");
}

#[test]
fn probabilistic_is_deterministic_and_salted() {
    let mut a = policies("[{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 50 } }]");
    let mut b = policies("[{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 50 } }]");
    let mut salted =
        policies("[{ name: p, type: probabilistic, probabilistic: { sampling_percentage: 50, hash_salt: other } }]");
    let batches = trace(Spec::default());
    let mut differ = 0;
    for i in 0..200u8 {
        let id = [i; 16];
        let view_trace = pending(&batches);
        let view = TraceView::new(&id, &view_trace);
        assert_eq!(a.decide(&view, 0).keep, b.decide(&view, 0).keep);
        differ += usize::from(a.decide(&view, 0).keep != salted.decide(&view, 0).keep);
    }
    assert!(differ > 20, "a different salt picks different traces");
    assert_eq!(
        a.decide(&TraceView::new(&[3; 16], &pending(&batches)), 0).probabilistic,
        a.decide(&TraceView::new(&[3; 16], &pending(&batches)), 0).keep.then_some(50.0)
    );
    assert_eq!(tracestate_threshold(10.0), "e6666666666666");
    assert_eq!(tracestate_threshold(25.0), "c");
    assert_eq!(tracestate_threshold(50.0), "8");
    assert_eq!(tracestate_threshold(100.0), "0");
}

#[test]
fn latency_bounds() {
    let mut p = policies("[{ name: l, type: latency, latency: { threshold_ms: 100, upper_threshold_ms: 500 } }]");
    assert!(!keeps(&mut p, &trace(Spec { duration_ms: 99, ..Default::default() })));
    assert!(keeps(&mut p, &trace(Spec { duration_ms: 100, ..Default::default() })));
    assert!(keeps(&mut p, &trace(Spec { duration_ms: 500, ..Default::default() })));
    assert!(!keeps(&mut p, &trace(Spec { duration_ms: 501, ..Default::default() })));
}

#[test]
fn attribute_policies_and_inverted_matches() {
    let route = |r: &str| vec![kv("http.route", any_value::Value::StringValue(r.into()))];
    let mut exact =
        policies("[{ name: s, type: string_attribute, string_attribute: { key: http.route, values: [/checkout] } }]");
    assert!(keeps(&mut exact, &trace(Spec { attributes: route("/checkout"), ..Default::default() })));
    assert!(!keeps(&mut exact, &trace(Spec { attributes: route("/checkout/x"), ..Default::default() })));

    let mut regex = policies(
        "[{ name: s, type: string_attribute, string_attribute: { key: http.route, values: ['/check.*'], enabled_regex_matching: true } }]",
    );
    assert!(keeps(&mut regex, &trace(Spec { attributes: route("/checkout/x"), ..Default::default() })));
    assert!(!keeps(&mut regex, &trace(Spec { attributes: route("/health"), ..Default::default() })));

    // Inverted: a match drops the trace even when another policy keeps it; no match keeps it.
    let mut inverted = policies(
        "[ { name: all, type: always_sample },
           { name: no-health, type: string_attribute, string_attribute: { key: http.route, values: [/health], invert_match: true } } ]",
    );
    assert!(!keeps(&mut inverted, &trace(Spec { attributes: route("/health"), ..Default::default() })));
    assert!(keeps(&mut inverted, &trace(Spec { attributes: route("/checkout"), ..Default::default() })));

    // Resource attributes count too.
    let mut by_service =
        policies("[{ name: s, type: string_attribute, string_attribute: { key: service.name, values: [payments] } }]");
    let payments = vec![kv("service.name", any_value::Value::StringValue("payments".into()))];
    assert!(keeps(&mut by_service, &trace(Spec { resource: payments, ..Default::default() })));

    let mut numeric = policies("[{ name: n, type: numeric_attribute, numeric_attribute: { key: order.value, min_value: 10000, max_value: 99999 } }]");
    let value = |v: i64| vec![kv("order.value", any_value::Value::IntValue(v))];
    assert!(keeps(&mut numeric, &trace(Spec { attributes: value(10_000), ..Default::default() })));
    assert!(!keeps(&mut numeric, &trace(Spec { attributes: value(9_999), ..Default::default() })));

    let mut boolean =
        policies("[{ name: b, type: boolean_attribute, boolean_attribute: { key: retry, value: true } }]");
    let retry = |v: bool| vec![kv("retry", any_value::Value::BoolValue(v))];
    assert!(keeps(&mut boolean, &trace(Spec { attributes: retry(true), ..Default::default() })));
    assert!(!keeps(&mut boolean, &trace(Spec { attributes: retry(false), ..Default::default() })));
}

#[test]
fn span_count_and_trace_state() {
    let mut count = policies("[{ name: c, type: span_count, span_count: { min_spans: 2, max_spans: 4 } }]");
    assert!(!keeps(&mut count, &trace(Spec { spans: 1, ..Default::default() })));
    assert!(keeps(&mut count, &trace(Spec { spans: 4, ..Default::default() })));
    assert!(!keeps(&mut count, &trace(Spec { spans: 5, ..Default::default() })));

    let mut state = policies("[{ name: t, type: trace_state, trace_state: { key: vendor, values: [debug] } }]");
    assert!(keeps(&mut state, &trace(Spec { trace_state: "ot=th:8,vendor=debug", ..Default::default() })));
    assert!(!keeps(&mut state, &trace(Spec { trace_state: "vendor=prod", ..Default::default() })));
}

#[test]
fn and_not_drop() {
    let yaml = "
- name: slow-errors
  type: and
  and:
    and_sub_policy:
      - { name: e, type: status_code, status_code: { status_codes: [ERROR] } }
      - { name: l, type: latency, latency: { threshold_ms: 1000 } }
";
    let mut and = policies(yaml);
    assert!(keeps(&mut and, &trace(Spec { error: true, duration_ms: 1500, ..Default::default() })));
    assert!(!keeps(&mut and, &trace(Spec { error: true, duration_ms: 10, ..Default::default() })));

    let mut not = policies("[{ name: n, type: not, not: { not_sub_policy: { name: e, type: status_code, status_code: { status_codes: [ERROR] } } } }]");
    assert!(keeps(&mut not, &trace(Spec::default())));
    assert!(!keeps(&mut not, &trace(Spec { error: true, ..Default::default() })));

    let yaml = "
- { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
- name: drop-health
  type: drop
  drop:
    drop_sub_policy:
      - { name: h, type: string_attribute, string_attribute: { key: http.route, values: [/health] } }
";
    let mut drop = policies(yaml);
    let health = vec![kv("http.route", any_value::Value::StringValue("/health".into()))];
    assert!(
        !keeps(&mut drop, &trace(Spec { error: true, attributes: health, ..Default::default() })),
        "drop wins over a keep"
    );
    assert!(keeps(&mut drop, &trace(Spec { error: true, ..Default::default() })));
}

#[test]
fn rate_limiting_in_event_time_and_split_across_workers() {
    let mut p = policies("[{ name: r, type: rate_limiting, rate_limiting: { spans_per_second: 10 } }]");
    let three = trace(Spec { spans: 3, ..Default::default() });
    let view_trace = pending(&three);
    let view = TraceView::new(&[1; 16], &view_trace);
    let kept: Vec<bool> = (0..5).map(|_| p.decide(&view, 1_000).keep).collect();
    assert_eq!(kept, [true, true, true, false, false], "10 spans per second: three traces of 3");
    assert!(!p.decide(&view, 1_100).keep, "0.1 s of event time refills 1 span");
    assert!(p.decide(&view, 2_000).keep, "a second of event time refills the budget");

    // A worker owning a quarter of the partitions keeps a quarter of the budget.
    let mut quarter = policies("[{ name: r, type: rate_limiting, rate_limiting: { spans_per_second: 100 } }]");
    quarter.set_rate_share(0.25);
    let kept = (0..20).filter(|_| quarter.decide(&view, 5_000).keep).count();
    assert_eq!(kept, 8, "25 spans of budget: eight traces of 3");
}

#[test]
fn composite_allocates_the_budget_in_order() {
    let yaml = "
- name: composite
  type: composite
  composite:
    max_total_spans_per_second: 100
    policy_order: [errors, everything]
    composite_sub_policy:
      - { name: everything, type: always_sample }
      - { name: errors, type: status_code, status_code: { status_codes: [ERROR] } }
    rate_allocation:
      - { policy: errors, percent: 60 }
      - { policy: everything, percent: 30 }
";
    let mut p = policies(yaml);
    let ten_ok = trace(Spec { spans: 10, ..Default::default() });
    let ten_err = trace(Spec { spans: 10, error: true, ..Default::default() });
    let ok_trace = pending(&ten_ok);
    let ok = TraceView::new(&[1; 16], &ok_trace);
    let err_trace = pending(&ten_err);
    let err = TraceView::new(&[1; 16], &err_trace);
    // Errors: 60 spans from their own allocation, then 30 more from `everything`'s.
    let errors_kept = (0..12).filter(|_| p.decide(&err, 0).keep).count();
    assert_eq!(errors_kept, 9);
    assert!(!p.decide(&ok, 0).keep, "everything's allocation is spent");
    assert!(p.decide(&ok, 1_000).keep, "and refills with event time");
}

#[test]
fn config_mistakes_are_reported_with_their_paths() {
    let yaml = "
- { name: a, type: latency }
- { name: a, type: status_code, status_code: { status_codes: [FAILED] }, latency: { threshold_ms: 1 } }
- { name: c, type: probabilistic, probabilistic: { sampling_percentage: 120 } }
- { name: d, type: string_attribute, string_attribute: { key: k, values: ['('], enabled_regex_matching: true } }
- name: e
  type: composite
  composite: { max_total_spans_per_second: 10, policy_order: [missing], composite_sub_policy: [ { name: x, type: always_sample } ] }
- name: f
  type: and
  and: { and_sub_policy: [ { name: g, type: rate_limiting, rate_limiting: {} } ] }
";
    let configs: Vec<PolicyConfig> = tailgate_config::from_yaml(yaml).unwrap();
    let problems = Policies::build(&configs).unwrap_err();
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "sampler.policies[0].latency",
            "sampler.policies[1].latency",
            "sampler.policies[1].status_code.status_codes[0]",
            "sampler.policies[1].name",
            "sampler.policies[2].probabilistic.sampling_percentage",
            "sampler.policies[3].string_attribute.values[0]",
            "sampler.policies[4].composite.policy_order[0]",
            "sampler.policies[5].and.and_sub_policy[0].rate_limiting.spans_per_second",
        ]
    );

    // A misspelled type or option is caught while parsing, with its path.
    let problems = tailgate_config::from_yaml::<Vec<PolicyConfig>>("[{ name: x, type: latncy }]").unwrap_err();
    assert_eq!(problems.iter().next().unwrap().path, "[0].type");
    let problems =
        tailgate_config::from_yaml::<Vec<PolicyConfig>>("[{ name: x, type: latency, latency: { treshold_ms: 5 } }]")
            .unwrap_err();
    assert_eq!(problems.iter().next().unwrap().path, "[0].latency.treshold_ms");
}

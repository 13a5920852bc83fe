//! The exact service graph: service-to-service calls counted from each whole trace at its decision, kept or not.
//!
//! The Collector's `servicegraph` connector and Tempo pair a client span with its server span through an in-memory
//! store that expires, so a pair split across collectors or arriving late is lost. The sampler holds each trace
//! whole when it decides it, so it pairs them exactly: an edge is a span of kind CLIENT (or PRODUCER) in one
//! service whose child of kind SERVER (or CONSUMER) is in another; a CLIENT span with `db.system` and no server
//! child is an edge to that database (`connection_type="database"`), as Tempo draws it.
//!
//! In the names Grafana's service graph view reads: `traces_service_graph_request_total{client, server}`,
//! `traces_service_graph_request_failed_total` (either side's status is ERROR),
//! `traces_service_graph_request_server_seconds` and `…_client_seconds` (histograms of each side's duration).
//! Cumulative per worker and partition, each its own `service.instance.id` like the RED metrics, so they add up
//! (`sum by (client, server)`) across workers. Bounded: a partition keeps at most `max_edges_per_partition`
//! edges; calls on further edges go to one overflow series (`otel.metric.overflow=true`). Spans that arrive after
//! their trace's decision are not counted.

use std::collections::HashMap;

use crate::series_limit::{bounded, SeriesLimit};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde::{Deserialize, Serialize};
use tailgate_config::Problems;
use tailgate_proto::wire::SpanFields;

use crate::buffer::PendingTrace;
use crate::red::{series_instance, service_name, OVERFLOW_ATTRIBUTE};

pub const REQUESTS: &str = "traces_service_graph_request_total";
pub const FAILED: &str = "traces_service_graph_request_failed_total";
pub const SERVER_SECONDS: &str = "traces_service_graph_request_server_seconds";
pub const CLIENT_SECONDS: &str = "traces_service_graph_request_client_seconds";

/// The `sampler.service_graph:` section. Written with the RED metrics, every `sampler.red_metrics.interval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceGraphConfig {
    pub enabled: bool,
    /// Upper bounds of the duration histograms' buckets, in seconds (Tempo's defaults).
    pub histogram_buckets_seconds: Vec<f64>,
    /// Edges a partition keeps; calls on further edges go to the overflow series.
    pub max_edges_per_partition: usize,
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            enabled: true,
            histogram_buckets_seconds: vec![0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8],
            max_edges_per_partition: 1000,
        }
    }
}

impl ServiceGraphConfig {
    pub fn validate(&self, path: &str, problems: &mut Problems) {
        let buckets = &self.histogram_buckets_seconds;
        if buckets.is_empty() || buckets.windows(2).any(|w| w[0] >= w[1]) {
            problems.push(format!("{path}.histogram_buckets_seconds"), "must be a non-empty, strictly increasing list");
        }
        if self.max_edges_per_partition == 0 {
            problems.push(format!("{path}.max_edges_per_partition"), "must be at least 1");
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Edge {
    client: String,
    server: String,
    /// `""`, `"messaging_system"` (producer → consumer) or `"database"`.
    connection_type: &'static str,
    overflow: bool,
}

#[derive(Clone, Debug)]
struct Calls {
    requests: u64,
    failed: u64,
    server: Durations,
    client: Durations,
}

#[derive(Clone, Debug)]
struct Durations {
    counts: Vec<u64>,
    sum: f64,
}

impl Durations {
    fn new(buckets: usize) -> Self {
        Durations { counts: vec![0; buckets + 1], sum: 0.0 }
    }

    fn observe(&mut self, seconds: f64, bounds: &[f64]) {
        self.sum += seconds;
        let bucket = bounds.iter().position(|bound| seconds <= *bound).unwrap_or(bounds.len());
        self.counts[bucket] += 1;
    }
}

/// One span as the graph needs it.
struct Node<'a> {
    span_id: &'a [u8],
    parent: &'a [u8],
    kind: i32,
    service: &'a str,
    error: bool,
    seconds: f64,
    bytes: &'a [u8],
}

/// One partition's cumulative edges.
#[derive(Debug)]
pub struct ServiceGraph {
    bounds: Vec<f64>,
    start_ns: u64,
    limit: SeriesLimit,
    edges: HashMap<Edge, Calls>,
    overflowing: bool,
}

impl ServiceGraph {
    pub fn new(config: &ServiceGraphConfig, start_ns: u64) -> Self {
        Self::sharing(config, start_ns, SeriesLimit::new(config.max_edges_per_partition))
    }

    /// Edges counted against `limit`, which the partition's other tenants share.
    pub fn sharing(config: &ServiceGraphConfig, start_ns: u64, limit: SeriesLimit) -> Self {
        ServiceGraph {
            bounds: config.histogram_buckets_seconds.clone(),
            start_ns,
            limit,
            edges: HashMap::new(),
            overflowing: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// Counts the calls of one whole trace. Returns the calls that went to the overflow series.
    pub fn record(&mut self, trace: &PendingTrace) -> u64 {
        let nodes: Vec<Node<'_>> = trace
            .encoded_spans()
            .map(|(resource, bytes)| {
                let fields = SpanFields::read(bytes);
                Node {
                    span_id: fields.span_id,
                    parent: fields.parent_span_id,
                    kind: fields.kind,
                    service: service_name(resource),
                    error: fields.status_code == StatusCode::Error as i32,
                    seconds: fields.end_time_unix_nano.saturating_sub(fields.start_time_unix_nano) as f64 / 1e9,
                    bytes,
                }
            })
            .collect();
        let by_id: HashMap<&[u8], usize> =
            nodes.iter().enumerate().filter(|(_, n)| !n.span_id.is_empty()).map(|(i, n)| (n.span_id, i)).collect();
        let (client, producer) = (SpanKind::Client as i32, SpanKind::Producer as i32);
        let (server, consumer) = (SpanKind::Server as i32, SpanKind::Consumer as i32);
        let mut answered = vec![false; nodes.len()];
        let mut overflowed = 0;
        for node in &nodes {
            if node.kind != server && node.kind != consumer {
                continue;
            }
            let Some(&parent) = by_id.get(node.parent) else { continue };
            let caller = &nodes[parent];
            let pair =
                (caller.kind == client && node.kind == server) || (caller.kind == producer && node.kind == consumer);
            if !pair {
                continue;
            }
            answered[parent] = true;
            if caller.service == node.service {
                continue;
            }
            let connection_type = if node.kind == consumer { "messaging_system" } else { "" };
            overflowed += self.add(caller.service, node.service, connection_type, caller, node);
        }
        for (i, node) in nodes.iter().enumerate() {
            if node.kind != client || answered[i] {
                continue;
            }
            let system =
                crate::policy::trace::span_attributes(node.bytes, "db.system").find_map(|kv| match kv.value?.value? {
                    any_value::Value::StringValue(system) if !system.is_empty() => Some(system),
                    _ => None,
                });
            if let Some(system) = system {
                overflowed += self.add(node.service, &system, "database", node, node);
            }
        }
        overflowed
    }

    fn add(
        &mut self,
        client: &str,
        server: &str,
        connection_type: &'static str,
        caller: &Node<'_>,
        callee: &Node<'_>,
    ) -> u64 {
        let (client, server) = (bounded(client), bounded(server));
        let mut edge = Edge { client: client.to_owned(), server: server.to_owned(), connection_type, overflow: false };
        let mut overflowed = 0;
        if !self.edges.contains_key(&edge) && !self.limit.take() {
            overflowed = 1;
            if !self.overflowing && !self.limit.take_overflow() {
                // No room even for an overflow edge: counted only.
                return overflowed;
            }
            self.overflowing = true;
            edge = Edge { client: String::new(), server: String::new(), connection_type: "", overflow: true };
        }
        let buckets = self.bounds.len();
        let calls = self.edges.entry(edge).or_insert_with(|| Calls {
            requests: 0,
            failed: 0,
            server: Durations::new(buckets),
            client: Durations::new(buckets),
        });
        calls.requests += 1;
        calls.failed += u64::from(caller.error || callee.error);
        calls.server.observe(callee.seconds, &self.bounds);
        calls.client.observe(caller.seconds, &self.bounds);
        overflowed
    }

    /// The cumulative edges as an OTLP request.
    pub fn export(&self, instance: &str, partition: i32, now_ns: u64) -> ExportMetricsServiceRequest {
        let text = |k: &str, v: &str| KeyValue {
            key: k.to_owned(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.to_owned())) }),
        };
        let attributes = |edge: &Edge| {
            if edge.overflow {
                return vec![KeyValue {
                    key: OVERFLOW_ATTRIBUTE.to_owned(),
                    value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
                }];
            }
            let mut attributes = vec![text("client", &edge.client), text("server", &edge.server)];
            if !edge.connection_type.is_empty() {
                attributes.push(text("connection_type", edge.connection_type));
            }
            attributes
        };
        let counter = |name: &str, value: &dyn Fn(&Calls) -> u64| Metric {
            name: name.to_owned(),
            description: "Calls between services, counted from whole traces before sampling.".to_owned(),
            data: Some(metric::Data::Sum(Sum {
                data_points: self
                    .edges
                    .iter()
                    .map(|(edge, calls)| NumberDataPoint {
                        attributes: attributes(edge),
                        start_time_unix_nano: self.start_ns,
                        time_unix_nano: now_ns,
                        value: Some(number_data_point::Value::AsInt(value(calls) as i64)),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        };
        let histogram = |name: &str, side: &dyn Fn(&Calls) -> &Durations| Metric {
            name: name.to_owned(),
            description: "Durations of calls between services, from whole traces before sampling.".to_owned(),
            unit: "s".to_owned(),
            data: Some(metric::Data::Histogram(Histogram {
                data_points: self
                    .edges
                    .iter()
                    .map(|(edge, calls)| HistogramDataPoint {
                        attributes: attributes(edge),
                        start_time_unix_nano: self.start_ns,
                        time_unix_nano: now_ns,
                        count: calls.requests,
                        sum: Some(side(calls).sum),
                        bucket_counts: side(calls).counts.clone(),
                        explicit_bounds: self.bounds.clone(),
                        ..Default::default()
                    })
                    .collect(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            })),
            ..Default::default()
        };
        let metrics = vec![
            counter(REQUESTS, &|c| c.requests),
            counter(FAILED, &|c| c.failed),
            histogram(SERVER_SECONDS, &|c| &c.server),
            histogram(CLIENT_SECONDS, &|c| &c.client),
        ];
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        text("service.instance.id", &series_instance(instance, partition)),
                        text("tailgate.sampler.instance", instance),
                        text("tailgate.sampler.partition", &partition.to_string()),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope { name: "tailgate.sampler".to_owned(), ..Default::default() }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }
    }

    fn span(id: u8, parent: Option<u8>, kind: SpanKind, ms: u64, error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            status: error.then(|| Status { code: StatusCode::Error as i32, ..Default::default() }),
            ..Default::default()
        }
    }

    fn requests(graph: &ServiceGraph) -> Vec<(String, String, &'static str, u64, u64)> {
        let mut edges: Vec<_> = graph
            .edges
            .iter()
            .map(|(e, c)| (e.client.clone(), e.server.clone(), e.connection_type, c.requests, c.failed))
            .collect();
        edges.sort();
        edges
    }

    #[test]
    fn client_server_pairs_across_services_are_edges() {
        let mut db = span(5, Some(4), SpanKind::Client, 30, false);
        db.attributes.push(KeyValue {
            key: "db.system".into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue("postgresql".into())) }),
        });
        let trace = crate::buffer::pending(&[
            resource_spans(
                "gateway",
                vec![
                    span(1, None, SpanKind::Server, 100, false),
                    span(2, Some(1), SpanKind::Client, 50, true),
                    span(3, Some(1), SpanKind::Client, 40, false),
                    span(9, Some(1), SpanKind::Internal, 1, false),
                ],
            ),
            resource_spans("payments", vec![span(6, Some(2), SpanKind::Server, 45, false)]),
            resource_spans("inventory", vec![span(4, Some(3), SpanKind::Server, 35, false), db]),
            // A server span whose parent is a server span: no client side, no edge.
            resource_spans("cart", vec![span(7, Some(1), SpanKind::Server, 5, false)]),
        ]);
        let mut graph = ServiceGraph::new(&ServiceGraphConfig::default(), 0);
        assert_eq!(graph.record(&trace), 0);
        assert_eq!(
            requests(&graph),
            [
                ("gateway".into(), "inventory".into(), "", 1, 0),
                ("gateway".into(), "payments".into(), "", 1, 1),
                ("inventory".into(), "postgresql".into(), "database", 1, 0),
            ]
        );
        let payments = &graph.edges
            [&Edge { client: "gateway".into(), server: "payments".into(), connection_type: "", overflow: false }];
        assert_eq!((payments.server.sum, payments.client.sum), (0.045, 0.05));
    }

    #[test]
    fn edges_past_the_bound_go_to_the_overflow_series() {
        let config = ServiceGraphConfig { max_edges_per_partition: 1, ..Default::default() };
        let mut graph = ServiceGraph::new(&config, 0);
        for callee in ["a", "b", "c"] {
            let trace = crate::buffer::pending(&[
                resource_spans("gateway", vec![span(1, None, SpanKind::Client, 10, false)]),
                resource_spans(callee, vec![span(2, Some(1), SpanKind::Server, 5, false)]),
            ]);
            graph.record(&trace);
        }
        assert_eq!(requests(&graph), [("".into(), "".into(), "", 2, 0), ("gateway".into(), "a".into(), "", 1, 0)]);
        let exported = graph.export("w", 0, 1);
        let Some(metric::Data::Sum(sum)) = &exported.resource_metrics[0].scope_metrics[0].metrics[0].data else {
            panic!("a sum")
        };
        assert!(sum.data_points.iter().any(|p| p.attributes.iter().any(|kv| kv.key == OVERFLOW_ATTRIBUTE)));
    }
}

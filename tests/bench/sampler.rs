//! Sampler core benchmark: CPU-seconds per million spans and memory per buffered span, for the work a sampler
//! worker does per record — scan on the wire format, buffer each span's bytes by trace, decide in event time with the
//! seed's policies on those bytes, decode and encode only the kept traces — against the raw floor of the same records
//! (scan each, copy every span's bytes once), in the same run; beside it, what decoding every record and encoding it
//! again costs (the floor before the wire format). Kafka is left out on both sides: its cost is the ingest
//! benchmark's. Prints figures; asserts nothing.
//!
//! Usage: cargo bench --bench sampler [-- SPANS]   (default 1,000,000 spans per case)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, Span, Status};
use prost::Message;
use tailgate_proto::RecordLimit;
use tailgate_sampler::buffer::{PartitionBuffer, TraceLimits};
use tailgate_sampler::policy::{Policies, TraceView};
use tailgate_sampler::{split_kept, Marks, SamplerConfig};

/// Counts live heap bytes, to measure what buffering costs.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// The one place in the workspace that needs `unsafe`: a global allocator that forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

mod cpu;
// Shared with the integration tests; this bench builds only some of its requests.
#[allow(dead_code)]
#[path = "../harness/otlp.rs"]
mod otlp;

use otlp::kv;

const SPANS_PER_RECORD: usize = 500;
const SPANS_PER_TRACE: u64 = 5;
/// Event time between records: 200 records per second of event time.
const RECORD_INTERVAL_MS: i64 = 5;

/// Records of 500 spans of about `span_bytes`, 5 spans per trace spread over consecutive records; 2% of traces
/// fail and 2% are slow, as on a checkout flow on a good day.
fn records(total: usize, span_bytes: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut n: u64 = 0;
    while out.len() * SPANS_PER_RECORD < total {
        let spans: Vec<Span> = (0..SPANS_PER_RECORD)
            .map(|_| {
                n += 1;
                // Interleave: span k of trace t lands k records after its first span.
                let trace = n / SPANS_PER_TRACE;
                let failing = trace % 50 == 0;
                let slow = trace % 50 == 1;
                let mut span = Span {
                    trace_id: otlp::trace_id(trace),
                    span_id: n.to_be_bytes().to_vec(),
                    parent_span_id: if n % SPANS_PER_TRACE == 0 { vec![] } else { (n - 1).to_be_bytes().to_vec() },
                    name: "SELECT inventory.stock".to_owned(),
                    kind: 3,
                    start_time_unix_nano: 1_700_000_000_000_000_000,
                    end_time_unix_nano: 1_700_000_000_000_000_000 + if slow { 3_000_000_000 } else { 20_000_000 },
                    status: failing
                        .then(|| Status { code: status::StatusCode::Error as i32, message: "declined".into() }),
                    attributes: vec![kv("db.system", "postgresql")],
                    ..Default::default()
                };
                let pad = span_bytes.saturating_sub(span.encoded_len() + 20);
                span.attributes.push(kv("db.statement", &"x".repeat(pad)));
                span
            })
            .collect();
        let resource = Resource { attributes: vec![kv("service.name", "inventory")], ..Default::default() };
        out.push(otlp::trace_request_with(Some(resource), spans).encode_to_vec());
    }
    out
}

struct Figures {
    cpu: f64,
    spans: usize,
    kept_spans: usize,
    peak_spans: usize,
    peak_heap_per_span: f64,
}

fn sampler_core(records: &[Vec<u8>], decision_wait_ms: i64) -> Figures {
    let config = SamplerConfig::default();
    let mut policies = Policies::build(&config.policies).unwrap();
    let limits = TraceLimits { max_spans: 10_000, max_bytes: 16 << 20 };
    let mut buffer = PartitionBuffer::default();
    let mut tracker = tailgate_kafka::OffsetTracker::new();
    let (mut spans, mut kept_spans, mut peak_spans, mut peak_heap_per_span) = (0, 0, 0, 0.0);
    let mut buffered = 0;
    let baseline = LIVE.load(Ordering::Relaxed);
    let started = cpu::this_process();
    for (i, record) in records.iter().enumerate() {
        let request = tailgate_proto::wire::WireSignal::Traces.scan(record).unwrap();
        spans += SPANS_PER_RECORD;
        let added = buffer.add_record(
            i as i64,
            i as i64 * RECORD_INTERVAL_MS,
            tailgate_sampler::tenant::DEFAULT,
            &request,
            limits,
            |_| None,
        );
        tracker.read(i as i64, added.units);
        // Counted as they come and go: summing over the buffered traces per record would cost more than buffering.
        buffered += SPANS_PER_RECORD - added.invalid_trace_id;
        if buffered > peak_spans {
            peak_spans = buffered;
            let heap = (LIVE.load(Ordering::Relaxed) - baseline) as f64;
            let encoded: usize = buffer.buffered_bytes();
            peak_heap_per_span = (heap - encoded as f64) / buffered as f64;
        }
        for (trace_id, trace) in buffer.due(decision_wait_ms, None) {
            let verdict = policies.decide(&TraceView::new(&trace_id, &trace), buffer.clock_ms);
            if verdict.keep {
                // Written as the worker writes a kept trace: from its bytes, marked, split on the wire format.
                let marks = Marks::new(
                    config.record_policy.then_some(verdict.policy.as_deref().unwrap_or_default()),
                    verdict.probabilistic,
                );
                let request = trace.encode(|span, out| marks.write_span(span, out));
                kept_spans += trace.spans as usize;
                std::hint::black_box(split_kept(&request, 12, RecordLimit::from(1_000_000)));
            }
            buffered -= trace.spans as usize;
            trace.offsets.iter().for_each(|o| tracker.release(*o));
        }
    }
    Figures { cpu: cpu::this_process() - started, spans, kept_spans, peak_spans, peak_heap_per_span }
}

/// The floor: every record scanned and every span's bytes copied once, nothing buffered or decided.
fn raw(records: &[Vec<u8>]) -> f64 {
    let started = cpu::this_process();
    let mut copy = Vec::new();
    for record in records {
        let request = tailgate_proto::wire::WireSignal::Traces.scan(record).unwrap();
        copy.clear();
        for item in request.resources.iter().flat_map(|r| &r.scopes).flat_map(|s| &s.items) {
            copy.extend_from_slice(item.bytes);
        }
        std::hint::black_box(&copy);
    }
    cpu::this_process() - started
}

/// What decoding every record into messages and encoding it again costs.
fn decode_encode(records: &[Vec<u8>]) -> f64 {
    let started = cpu::this_process();
    for record in records {
        let request = ExportTraceServiceRequest::decode(record.as_slice()).unwrap();
        std::hint::black_box(request.encode_to_vec());
    }
    cpu::this_process() - started
}

fn main() {
    let total: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    println!("sampler core benchmark: {total} spans per case, {SPANS_PER_RECORD} spans per record, seed policies");
    println!(
        "{:<8} {:>6} {:>11} {:>11} {:>13} {:>14} {:>7} {:>6} {:>13} {:>17}",
        "span",
        "wait",
        "CPU-s/1M",
        "raw CPU-s/1M",
        "dec+enc /1M",
        "spans/CPU-s",
        "ratio",
        "kept",
        "peak buffered",
        "heap B/span extra"
    );
    for span_bytes in [300, 800] {
        let records = records(total, span_bytes);
        let measured = records.iter().map(Vec::len).sum::<usize>() as f64 / (records.len() * SPANS_PER_RECORD) as f64;
        let raw_cpu = raw(&records);
        let decode_cpu = decode_encode(&records);
        for wait_ms in [1_000, 10_000] {
            let f = sampler_core(&records, wait_ms);
            let per_million = f.cpu / f.spans as f64 * 1e6;
            println!(
                "{:<8} {:>5}s {:>11.3} {:>11.3} {:>13.3} {:>14.0} {:>7.2} {:>5.1}% {:>13} {:>17.0}",
                format!("~{measured:.0} B"),
                wait_ms / 1000,
                per_million,
                raw_cpu / f.spans as f64 * 1e6,
                decode_cpu / f.spans as f64 * 1e6,
                f.spans as f64 / f.cpu,
                f.cpu / raw_cpu,
                100.0 * f.kept_spans as f64 / f.spans as f64,
                f.peak_spans,
                f.peak_heap_per_span,
            );
        }
    }
}

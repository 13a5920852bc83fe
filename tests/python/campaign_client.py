"""The fault campaign's load: steady traces, logs and metrics from the real OpenTelemetry Python SDK, alternately
through two gateways, with a ledger of exactly what the SDK saw acknowledged.

Usage: campaign_client.py --gateways HOST:PORT,HOST:PORT --seconds N --seed S --ledger PATH [--rate TRACES_PER_S]

Traces come in three kinds, chosen with the seeded generator (so are their IDs):
* error: an OK root, then 1-2 s later (so in a later export request) a child with status ERROR;
* slow: an OK root, then 1-2 s later a child lasting 2.5 s;
* ok: an OK root, then 0.3-1 s later an OK child lasting a few milliseconds.
The later child is the point: a sampler that decides on the root alone, or forgets it across a fault, drops it.

Each trace also logs one line in its root's context (so the record carries the trace ID), adds to a delta sum
(`campaign.orders`) and records into a histogram (`campaign.latency`, cumulative: the Prometheus exporter takes delta
histograms as unsupported).

The ledger (JSON lines) has one line per export call of each signal: whether the SDK's exporter returned SUCCESS, which
gateway, when the call started and ended, and the items of the batch (a span with what it says: name, status, kind,
start and end; a log record with its severity, trace and span IDs and service). Nothing else counts as
acknowledged.
"""

import argparse
import heapq
import json
import logging
import random
import threading
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

try:  # the name since SDK 1.39; the old one is still defined but no longer what exporters return
    from opentelemetry.sdk._logs.export import LogRecordExportResult as LogExportResult
except ImportError:
    from opentelemetry.sdk._logs.export import LogExportResult
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

# The SDK's own export timeout is 10 s; shorter, so a stopped gateway costs a batch, not the whole schedule.
EXPORT_TIMEOUT_S = 4


class Ledger:
    """JSON lines, one per export call, written as soon as the call returns."""

    def __init__(self, path):
        self.file = open(path, "w", buffering=1)
        self.lock = threading.Lock()

    def write(self, entry):
        with self.lock:
            self.file.write(json.dumps(entry) + "\n")


class Alternating:
    """Sends each export call through the next gateway in turn; records what each call carried and its result."""

    def __init__(self, inners, ledger, signal):
        self.inners, self.ledger, self.signal, self.n = inners, ledger, signal, 0
        self.lock = threading.Lock()

    def next(self):
        with self.lock:
            self.n += 1
            return (self.n - 1) % len(self.inners)

    def call(self, items, export):
        gateway = self.next()
        start = time.time()
        try:
            ok = export(self.inners[gateway])
        except Exception:  # noqa: BLE001 - an exception is a failed export, as the SDK treats it
            ok = False
        self.ledger.write(
            {"signal": self.signal, "ok": ok, "gateway": gateway, "start": start, "end": time.time(), "items": items}
        )
        return ok


class SpanLedger(Alternating):
    def export(self, spans):
        items = []
        for span in spans:
            ctx = span.get_span_context()
            kind = span.attributes.get("campaign.kind", "ok")
            # What the span says, beside who it is: the ledger checks that every stage holds it as sent.
            content = f"{span.name}|{span.status.status_code.value}|{kind}|{span.start_time}|{span.end_time}"
            items.append([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), kind, span.parent is None, content])
        ok = self.call(items, lambda inner: inner.export(spans) == SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self):
        for inner in self.inners:
            inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def log_content(item):
    """What a log record says: body, severity number, trace and span IDs (hex), its resource's service.name."""
    record = getattr(item, "log_record", item)
    resource = getattr(item, "resource", None) or getattr(record, "resource", None)
    service = resource.attributes.get("service.name", "") if resource is not None else ""
    severity = record.severity_number.value if record.severity_number is not None else 0
    return [str(record.body), severity, format(record.trace_id or 0, "032x"), format(record.span_id or 0, "016x"), service]


class LogLedger(Alternating):
    def export(self, batch):
        items = [log_content(item) for item in batch]
        ok = self.call(items, lambda inner: inner.export(batch) == LogExportResult.SUCCESS)
        return LogExportResult.SUCCESS if ok else LogExportResult.FAILURE

    def shutdown(self):
        for inner in self.inners:
            inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


TEMPORALITY = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.CUMULATIVE}


class MetricLedger(MetricExporter):
    def __init__(self, inners, ledger):
        super().__init__(preferred_temporality=TEMPORALITY)
        self.calls = Alternating(inners, ledger, "metrics")

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        items = []
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        if hasattr(point, "bucket_counts"):
                            items.append([metric.name, "histogram", point.count, point.sum])
                        else:
                            items.append([metric.name, "sum", point.value, 0])
        ok = self.calls.call(
            items, lambda inner: inner.export(metrics_data, timeout_millis=timeout_millis) == MetricExportResult.SUCCESS
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        for inner in self.calls.inners:
            inner.shutdown()


class SeededIds(IdGenerator):
    """Trace and span IDs from the campaign's seed, so a run can be repeated ID for ID."""

    def __init__(self, rng):
        self.rng = rng
        self.lock = threading.Lock()

    def generate_span_id(self):
        with self.lock:
            return self.rng.getrandbits(64) or 1

    def generate_trace_id(self):
        with self.lock:
            return self.rng.getrandbits(128) or 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateways", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    ids = SeededIds(random.Random(args.seed ^ 0x5EED))
    ledger = Ledger(args.ledger)
    endpoints = [f"http://{g}" for g in args.gateways.split(",")]
    resource = Resource.create({"service.name": "campaign", "service.namespace": "shop"})

    spans = SpanLedger(
        [OTLPSpanExporter(endpoint=e, insecure=True, timeout=EXPORT_TIMEOUT_S) for e in endpoints], ledger, "spans"
    )
    tracer_provider = TracerProvider(resource=resource, id_generator=ids)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans, schedule_delay_millis=200, max_queue_size=65536))
    tracer = tracer_provider.get_tracer("tailgate.campaign")

    logs = LogLedger(
        [OTLPLogExporter(endpoint=e, insecure=True, timeout=EXPORT_TIMEOUT_S) for e in endpoints], ledger, "logs"
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(logs, schedule_delay_millis=200, max_queue_size=65536)
    )
    logger = logging.getLogger("campaign")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logger_provider))

    metrics = MetricLedger(
        [
            OTLPMetricExporter(endpoint=e, insecure=True, timeout=EXPORT_TIMEOUT_S, preferred_temporality=TEMPORALITY)
            for e in endpoints
        ],
        ledger,
    )
    reader = PeriodicExportingMetricReader(metrics, export_interval_millis=1_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = meter_provider.get_meter("tailgate.campaign")
    orders = meter.create_counter("campaign.orders")
    latency = meter.create_histogram("campaign.latency", unit="ms")

    pending = []  # (due, sequence, trace kind, root context, root start ns)
    started = time.time()
    next_trace, n = started, 0
    while time.time() - started < args.seconds or pending:
        now = time.time()
        while now - started < args.seconds and next_trace <= now:
            next_trace += 1.0 / args.rate
            kind = rng.choices(["error", "slow", "ok"], weights=[15, 10, 75])[0]
            start_ns = time.time_ns()
            root = tracer.start_span("checkout", start_time=start_ns, attributes={"campaign.kind": kind})
            root.end(end_time=start_ns + 50_000_000)
            with trace.use_span(root, end_on_exit=False):
                logger.info("campaign log %d", n)
            orders.add(rng.randint(1, 5))
            latency.record(rng.uniform(1, 500))
            delay = rng.uniform(1.0, 2.0) if kind != "ok" else rng.uniform(0.3, 1.0)
            heapq.heappush(pending, (now + delay, n, kind, trace.set_span_in_context(root), start_ns))
            n += 1
        while pending and pending[0][0] <= now:
            _, _, kind, ctx, start_ns = heapq.heappop(pending)
            child_start = start_ns + 10_000_000
            child = tracer.start_span("charge", context=ctx, start_time=child_start, attributes={"campaign.kind": kind})
            if kind == "error":
                child.set_status(Status(StatusCode.ERROR, "card declined"))
            child.end(end_time=child_start + (2_500_000_000 if kind == "slow" else 5_000_000))
        time.sleep(0.02)

    tracer_provider.force_flush()
    logger_provider.force_flush()
    meter_provider.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()
    print(json.dumps({"seed": args.seed, "traces": n}), flush=True)


if __name__ == "__main__":
    main()

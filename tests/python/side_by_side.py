"""The seed's checkout, sent by the real OpenTelemetry Python SDK to two pipelines at once — the same spans, metric
points and log records to each (every provider has one exporter per pipeline), as a team trying Tailgate beside
its Collector would.

Usage: side_by_side.py GRPC_ENDPOINT_A GRPC_ENDPOINT_B CHECKOUTS
Checkout i: gateway → cart, inventory, payments, notifications, shipping (six services, one span each). Every 10th
checkout's payment fails, and its failing span ends (so is exported) after the root; every 10th, offset by 5, takes
3 s. Prints one JSON object: {"errors": [...], "slow": [...], "rest": [...]} (hex trace IDs), "logs": the log lines.
Exits non-zero if an export of spans, metrics or logs failed.
"""

import json
import logging
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import Status, StatusCode

SERVICES = ["gateway", "cart", "inventory", "payments", "notifications", "shipping"]


class Checked:
    """A span exporter that counts failures."""

    def __init__(self, inner):
        self.inner = inner
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result != SpanExportResult.SUCCESS:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


class CheckedMetrics(OTLPMetricExporter):
    """The OTLP metric exporter, counting failed exports."""

    failures = 0

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        result = super().export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        if result != MetricExportResult.SUCCESS:
            self.failures += 1
        return result


class CheckedLogs(OTLPLogExporter):
    """The OTLP log exporter, counting failed exports."""

    failures = 0

    def export(self, batch):
        result = super().export(batch)
        if result.name != "SUCCESS":
            self.failures += 1
        return result


class Service:
    def __init__(self, name, endpoints):
        resource = Resource.create({"service.name": name, "service.version": "2.3.1"})
        self.exporters = [Checked(OTLPSpanExporter(endpoint=e, insecure=True)) for e in endpoints]
        self.tracer_provider = TracerProvider(resource=resource)
        for exporter in self.exporters:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        self.tracer = self.tracer_provider.get_tracer(f"{name}.instrumentation", "1.0.0")
        self.metric_exporters = [CheckedMetrics(endpoint=e, insecure=True) for e in endpoints]
        self.readers = [
            PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
            for exporter in self.metric_exporters
        ]
        self.meter_provider = MeterProvider(resource=resource, metric_readers=self.readers)
        self.meter = self.meter_provider.get_meter(
            f"{name}.metrics", "1.0.0", schema_url="https://opentelemetry.io/schemas/1.26.0"
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.log_exporters = [CheckedLogs(endpoint=e, insecure=True) for e in endpoints]
        for exporter in self.log_exporters:
            self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
        self.log = logging.getLogger(name)
        self.log.propagate = False
        self.log.addHandler(LoggingHandler(logger_provider=self.logger_provider))
        self.log.setLevel(logging.INFO)

    def close(self):
        flushed = all(reader.force_flush() for reader in self.readers)
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        self.meter_provider.shutdown()
        return flushed


def main():
    endpoints, checkouts = sys.argv[1:3], int(sys.argv[3])
    services = {name: Service(name, endpoints) for name in SERVICES}
    orders = services["gateway"].meter.create_counter("checkout.orders", unit="{order}")
    amount = services["payments"].meter.create_histogram("payment.amount", unit="USD")
    out = {"errors": [], "slow": [], "rest": [], "logs": []}
    now = time.time_ns()
    for i in range(checkouts):
        failed, slow = i % 10 == 0, i % 10 == 5
        start = now - (3_000_000_000 if slow else 50_000_000)
        gateway = services["gateway"].tracer
        root = gateway.start_span("POST /checkout", start_time=start)
        context = trace.set_span_in_context(root)
        late = None
        for name in SERVICES[1:]:
            span = services[name].tracer.start_span(f"{name} handle", context=context, start_time=start + 1_000_000)
            if name == "payments" and failed:
                span.set_status(Status(StatusCode.ERROR, "card declined"))
                late = span
            else:
                span.end(end_time=start + 2_000_000)
        root.end(end_time=now)
        if late is not None:
            late.end(end_time=now)
        trace_id = format(root.get_span_context().trace_id, "032x")
        out["errors" if failed else "slow" if slow else "rest"].append(trace_id)
        outcome = "declined" if failed else "ok"
        orders.add(1, {"outcome": outcome})
        amount.record(20 + i % 7 * 10, {"currency": "USD"})
        with trace.use_span(root, end_on_exit=False):
            line = f"checkout {i} {outcome}"
            services["gateway"].log.info(line)
            out["logs"].append(line)
    flushed = all(service.close() for service in services.values())
    failures = sum(
        e.failures for s in services.values() for e in s.exporters + s.metric_exporters + s.log_exporters
    )
    print(json.dumps(out))
    return 1 if failures or not flushed else 0


if __name__ == "__main__":
    sys.exit(main())

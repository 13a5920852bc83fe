"""Sends traces, metrics and logs to a Tailgate gateway with the real OpenTelemetry Python SDK.

Usage: send_otlp.py grpc|http ENDPOINT TRACES SPANS_PER_TRACE
An https:// ENDPOINT is TLS; the SDK's own environment variables (OTEL_EXPORTER_OTLP_CERTIFICATE,
OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, OTEL_EXPORTER_OTLP_CLIENT_KEY, OTEL_EXPORTER_OTLP_HEADERS) set the CA, the
client certificate and the headers, as a user would set them.
Prints one JSON object: the hex trace and span IDs of every span the SDK exported, and the number of log records
and metric data points it sent. Exits non-zero if the SDK reports any export failure.
"""

import json
import logging
import sys

from opentelemetry import metrics, trace
from opentelemetry._logs import set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult


def exporters(protocol, endpoint):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = endpoint.startswith("http://")
        return (
            OTLPSpanExporter(endpoint=endpoint, insecure=insecure),
            OTLPMetricExporter(endpoint=endpoint, insecure=insecure),
            OTLPLogExporter(endpoint=endpoint, insecure=insecure),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
    )


class Recording:
    """Wraps a span exporter and remembers what it exported successfully."""

    def __init__(self, inner):
        self.inner = inner
        self.spans = []
        self.failures = 0

    def export(self, spans):
        result = self.inner.export(spans)
        if result == SpanExportResult.SUCCESS:
            for span in spans:
                ctx = span.get_span_context()
                self.spans.append([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")])
        else:
            self.failures += 1
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis=30000):
        return True


def main():
    protocol, endpoint, traces, per_trace = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    span_exporter, metric_exporter, log_exporter = exporters(protocol, endpoint)
    resource = Resource.create({"service.name": "checkout-test", "service.namespace": "shop"})

    recording = Recording(span_exporter)
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(recording))
    tracer = tracer_provider.get_tracer("tailgate.tests")

    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    checkouts = meter_provider.get_meter("tailgate.tests").create_counter("checkout.completed")

    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    set_logger_provider(logger_provider)
    log = logging.getLogger("checkout")
    log.propagate = False
    log.addHandler(LoggingHandler(logger_provider=logger_provider))
    log.setLevel(logging.INFO)

    for i in range(traces):
        with tracer.start_as_current_span("checkout") as root:
            for j in range(per_trace - 1):
                with tracer.start_as_current_span(f"step-{j}"):
                    pass
            log.info("checkout %d done", i)
        checkouts.add(1, {"outcome": "ok" if i % 2 else "error"})

    ok = reader.force_flush()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    meter_provider.shutdown()
    print(json.dumps({"spans": recording.spans, "logs": traces, "metrics_flushed": bool(ok), "failures": recording.failures}))
    return 1 if recording.failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Encodes and decodes OTLP with the `opentelemetry-proto` Python package: a protobuf implementation we didn't write.

  otlp_proto.py encode N   -> prints hex of an ExportTraceServiceRequest with N spans (trace i, span i)
  otlp_proto.py decode     -> reads hex record values (one per line) on stdin, prints JSON [[trace, span, name], ...]
  otlp_proto.py rich N     -> prints hex of a request of N spans over three services and two scopes, with every
                              kind of span field set (attributes of each value type, events, links, status, flags)
  otlp_proto.py spans      -> reads hex requests on stdin, prints JSON [[span, resource, scope], ...], each as the
                              hex of its serialization by this package, sorted: what a request holds, compared
                              whole
"""

import json
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span


def encode(n):
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "python-proto"
    ss = rs.scope_spans.add()
    for i in range(n):
        span = ss.spans.add()
        span.trace_id = (i + 1).to_bytes(16, "big")
        span.span_id = (i + 1).to_bytes(8, "big")
        span.name = f"py-{i}"
        span.kind = Span.SPAN_KIND_SERVER
    print(request.SerializeToString().hex())


def rich(n):
    request = ExportTraceServiceRequest()
    for service in ("cart", "inventory", "payments"):
        rs = request.resource_spans.add(schema_url="https://opentelemetry.io/schemas/1.26.0")
        rs.resource.attributes.add(key="service.name").value.string_value = service
        rs.resource.attributes.add(key="host.cores").value.int_value = 8
        rs.resource.dropped_attributes_count = 1
        for scope_name in ("http", "db"):
            ss = rs.scope_spans.add(schema_url="https://opentelemetry.io/schemas/1.24.0")
            ss.scope.name = scope_name
            ss.scope.version = "1.2.3"
            ss.scope.attributes.add(key="scope.kind").value.string_value = scope_name
            for i in range(n // 6):
                trace = (len(service) * 3 + len(scope_name)) * 0x9E3779B97F4A7C15 + i // 2
                span = ss.spans.add()
                span.trace_id = (trace % (1 << 128)).to_bytes(16, "big")
                span.span_id = (i + 1 + (len(service) << 32) + (len(scope_name) << 40)).to_bytes(8, "big")
                span.parent_span_id = (i + 7).to_bytes(8, "big") if i % 3 else b""
                span.trace_state = "vendor=x" if i % 2 else ""
                span.flags = 0x101
                span.name = f"{service}-{scope_name}-{i} é"
                span.kind = Span.SPAN_KIND_CLIENT if i % 2 else Span.SPAN_KIND_SERVER
                span.start_time_unix_nano = 1_700_000_000_000_000_000 + i
                span.end_time_unix_nano = 1_700_000_000_020_000_000 + i
                span.attributes.add(key="http.route").value.string_value = "/checkout"
                span.attributes.add(key="retries").value.int_value = -i
                span.attributes.add(key="ratio").value.double_value = 0.5
                span.attributes.add(key="ok").value.bool_value = bool(i % 2)
                span.attributes.add(key="blob").value.bytes_value = b"\x00\xff"
                span.attributes.add(key="list").value.array_value.values.add().string_value = "a"
                span.attributes.add(key="map").value.kvlist_value.values.add(key="k").value.int_value = 1
                span.dropped_attributes_count = 2
                event = span.events.add(time_unix_nano=span.start_time_unix_nano + 5, name="retry")
                event.attributes.add(key="attempt").value.int_value = 2
                link = span.links.add(trace_id=bytes(16 * [3]), span_id=bytes(8 * [4]), trace_state="a=b", flags=1)
                link.attributes.add(key="linked").value.bool_value = True
                span.status.code = 2 if i % 5 == 0 else 1
                span.status.message = "declined" if i % 5 == 0 else ""
    print(request.SerializeToString().hex())


def requests():
    """The requests on stdin, one hex line each."""
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield ExportTraceServiceRequest.FromString(bytes.fromhex(line))


def spans():
    out = []
    for request in requests():
        for rs in request.resource_spans:
            resource = rs.resource.SerializeToString(deterministic=True).hex() + "/" + rs.schema_url
            for ss in rs.scope_spans:
                scope = ss.scope.SerializeToString(deterministic=True).hex() + "/" + ss.schema_url
                for span in ss.spans:
                    out.append([span.SerializeToString(deterministic=True).hex(), resource, scope])
    out.sort()
    print(json.dumps(out))


def decode():
    out = []
    for request in requests():
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append([span.trace_id.hex(), span.span_id.hex(), span.name])
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "encode":
        encode(int(sys.argv[2]))
    elif sys.argv[1] == "rich":
        rich(int(sys.argv[2]))
    elif sys.argv[1] == "spans":
        spans()
    else:
        decode()

"""Encodes and decodes OTLP with the `opentelemetry-proto` Python package: a protobuf implementation we didn't write.

  otlp_proto.py encode N   -> prints hex of an ExportTraceServiceRequest with N spans (trace i, span i)
  otlp_proto.py decode     -> reads hex record values (one per line) on stdin, prints JSON [[trace, span, name], ...]
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


def decode():
    out = []
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request = ExportTraceServiceRequest.FromString(bytes.fromhex(line))
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append([span.trace_id.hex(), span.span_id.hex(), span.name])
    print(json.dumps(out))


if __name__ == "__main__":
    if sys.argv[1] == "encode":
        encode(int(sys.argv[2]))
    else:
        decode()

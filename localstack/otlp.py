"""An OTLP/HTTP trace receiver on 127.0.0.1: what a collector or Jaeger would be sent. The end-to-end tests
keep the spans (decoded with OpenTelemetry's own protobuf classes) to check a saga's trace; the benchmark
only counts what arrives (`keep=False`), so the receiver's own CPU stays out of the cost of tracing."""

from __future__ import annotations

import dataclasses
import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclasses.dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a trace's root
    name: str
    service: str
    attributes: dict[str, str]
    start_ns: int


class Receiver:
    """Listens on 127.0.0.1 (a free port) for `POST /v1/traces` while the `with` block runs."""

    def __init__(self, *, keep: bool = True) -> None:
        self.spans: list[Span] = []
        self.exports = 0  # requests received
        self.received_bytes = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.exports += 1
                    receiver.received_bytes += len(body)
                if keep:
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    receiver._take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:  # quiet: the test reads the spans
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    def _take(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource in request.resource_spans:
            service = next((a.value.string_value for a in resource.resource.attributes if a.key == "service.name"), "")
            for scope in resource.scope_spans:
                for span in scope.spans:
                    found.append(Span(
                        trace_id=span.trace_id.hex(), span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                        name=span.name, service=service, start_ns=span.start_time_unix_nano,
                        attributes={a.key: a.value.string_value for a in span.attributes},
                    ))
        with self._lock:
            self.spans.extend(found)

    def of_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return sorted((s for s in self.spans if s.trace_id == trace_id), key=lambda s: s.start_ns)

    def with_attribute(self, key: str, value: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.attributes.get(key) == value]

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

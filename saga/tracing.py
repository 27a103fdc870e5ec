"""One trace per saga: the W3C trace context travels in every CloudEvent the saga causes, as the
CloudEvents distributed-tracing extension (`traceparent`, `tracestate`), and each function continues it.

Every request a function serves runs in a span (`traced`, wrapped around the function's ASGI app by
`functions.platform.serve`): its parent is the delivered event's `ce-traceparent` (binary mode, as the
dispatcher delivers) or else the HTTP `traceparent` header (a client, the mesh). Every event the
function creates meanwhile is stamped with that span's context (`stamp`): the command `POST /orders`
writes to its outbox, the reply a participant answers with, the next command in that reply. So the
chain of spans is the chain of the saga's steps. A saga also keeps its start's context (the instance's
`traceparent`), so what the sweep or an operator sends it later joins the same trace (`joined`).

Exporting is off unless an endpoint is configured: OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: a collector, the cluster's way) or Zipkin's JSON API
(`OTEL_EXPORTER_ZIPKIN_ENDPOINT`: the local stack's viewer, `saga dev --tracing`), the SDK's own settings,
as are `OTEL_SERVICE_NAME` and the batch settings. Off, nothing of OpenTelemetry is imported (its cost is
a cold start's) and the context is passed through unchanged: an upstream trace still reaches the next
service that exports.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT")
MAX_TRACESTATE = 512  # W3C Trace Context: a vendor list longer than this may be dropped, and is here
# version-traceid-parentid-flags; an all-zero trace or span id is invalid (W3C Trace Context).
_VALID = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

# The context events created now are stamped with: (traceparent, tracestate).
_current: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("traceparent", default=None)


def enabled() -> bool:
    return any(os.environ.get(name) for name in _ENDPOINTS)


def _tracer() -> Any | None:
    """The SDK's tracer, or None when it cannot be set up (a bad OTEL_* setting): logged once, and the
    function goes on untraced rather than failing every request."""
    try:
        return _sdk_tracer()
    except Exception:
        if not _broken:
            log.exception("tracing could not be set up; spans are not exported")
            _broken.append(True)
        return None


_broken: list[bool] = []


@functools.cache
def _sdk_tracer() -> Any:
    """The SDK's tracer, set up once per process: spans batched and sent over OTLP/HTTP, or to Zipkin."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or os.environ.get("K_SERVICE") or os.environ.get(
        "FUNCTION_TARGET", "knative-saga")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("knative-saga")


def _exporter() -> Any:
    if os.environ.get("OTEL_EXPORTER_ZIPKIN_ENDPOINT") and not any(os.environ.get(n) for n in _ENDPOINTS[:2]):
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        return ZipkinExporter()  # reads OTEL_EXPORTER_ZIPKIN_ENDPOINT
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def valid(traceparent: str | None) -> str | None:
    return traceparent if traceparent is not None and _VALID.fullmatch(traceparent) else None


def trace_id(traceparent: str | None) -> str | None:
    """The 32 hex digits of the trace (what a trace viewer looks a trace up by)."""
    found = valid(traceparent)
    return found[3:35] if found else None


def current() -> str | None:
    found = _current.get()
    return None if found is None else found[0]


@contextmanager
def span(name: str, *, parent: str | None, state: str | None = None, kind: str = "SERVER",
         attributes: dict[str, Any] | None = None) -> Iterator[None]:
    """A span continuing `parent` (a traceparent; a new trace if None or invalid), current while the block
    runs: events created in it carry its context. Off, the parent itself is current (passed through)."""
    parent = valid(parent)
    if state is not None and len(state) > MAX_TRACESTATE:
        state = None
    tracer = _tracer() if enabled() else None
    if tracer is None:
        token = _current.set((parent, state) if parent else None)
        try:
            yield
        finally:
            _current.reset(token)
        return
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    propagator = TraceContextTextMapPropagator()
    carrier = {TRACEPARENT: parent} if parent else {}
    if parent and state:
        carrier[TRACESTATE] = state
    with tracer.start_as_current_span(name, context=propagator.extract(carrier),
                                         kind=getattr(trace.SpanKind, kind), attributes=attributes or {}):
        out: dict[str, str] = {}
        propagator.inject(out)  # the span's own context, for the events created in it
        ours = _current.set((out[TRACEPARENT], out.get(TRACESTATE))) if TRACEPARENT in out else None
        try:
            yield
        finally:
            if ours is not None:
                _current.reset(ours)


def stamp(event: Any) -> Any:
    """Give `event` (a CloudEvent) the current context, unless it carries one (a stored reply sent again)."""
    found = _current.get()
    if found is not None and not event.get(TRACEPARENT):
        event[TRACEPARENT] = found[0]
        if found[1]:
            event[TRACESTATE] = found[1]
    return event


@contextmanager
def joined(traceparent: str | None, name: str, **attributes: Any) -> Iterator[None]:
    """A span in a saga's own trace (its start's context, kept on the instance), for what acts on it from
    outside that trace: the sweep, an operator's resume."""
    with span(name, parent=traceparent, kind="INTERNAL", attributes=attributes):
        yield


# Delivered events' attributes a span records (binary mode: `ce-` headers), so a viewer finds a saga's spans.
_SPAN_ATTRIBUTES = {b"ce-type": "cloudevents.event_type", b"ce-id": "cloudevents.event_id", b"ce-sagaid": "saga.id",
                    b"ce-sagatype": "saga.type", b"ce-sagastep": "saga.step", b"ce-replytype": "saga.reply"}
_CONTEXT = (b"ce-traceparent", b"ce-tracestate", b"traceparent", b"tracestate")


def traced(app: Any) -> Any:
    """`app` (ASGI), each HTTP request in a span continuing the delivered event's or the caller's trace."""

    async def app_in_span(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        context: dict[bytes, str] = {}
        attributes: dict[str, str] = {}
        for key, raw in scope["headers"]:
            if key in _CONTEXT or key in _SPAN_ATTRIBUTES:
                value = raw.decode("latin-1")
                if key.startswith(b"ce-") and "%" in value:  # percent-encoded, as the binding writes ce- values
                    value = unquote(value)
                if key in _CONTEXT:
                    context[key] = value
                else:
                    attributes[_SPAN_ATTRIBUTES[key]] = value
        event_type = attributes.get("cloudevents.event_type")
        if event_type:  # a delivered event: its own context, which its producer stamped
            parent, state, name = context.get(b"ce-traceparent"), context.get(b"ce-tracestate"), event_type
        else:
            parent, state = context.get(b"traceparent"), context.get(b"tracestate")
            name = f"{scope['method']} /{scope['path'].strip('/').split('/')[0]}"
            attributes.update({"http.request.method": scope["method"], "url.path": scope["path"]})
        with span(name, parent=parent, state=state, kind="CONSUMER" if event_type else "SERVER",
                  attributes=attributes):
            await app(scope, receive, send)

    return app_in_span

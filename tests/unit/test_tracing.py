"""The trace context of `saga.tracing`: passed through when exporting is off, continued by a new span
when on, never taken from a malformed header, stamped on events that lack one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from saga import tracing

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_ZIPKIN_ENDPOINT")


@pytest.fixture
def off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporting off, whatever the shell running the tests has set."""
    for name in ENDPOINTS:
        monkeypatch.delenv(name, raising=False)


def event() -> CloudEvent:
    return CloudEvent({"type": "t", "source": "/s", "id": "1"}, {})


def test_off_the_context_passes_through(off: None) -> None:
    with tracing.span("work", parent=PARENT, state="vendor=1"):
        assert tracing.current() == PARENT
        stamped = tracing.stamp(event())
    assert (stamped["traceparent"], stamped["tracestate"]) == (PARENT, "vendor=1")
    assert tracing.current() is None, "the context ends with the block"


@pytest.mark.parametrize("bad", ["", "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                                 "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", PARENT.upper()])
def test_a_malformed_context_is_not_propagated(off: None, bad: str) -> None:
    with tracing.span("work", parent=bad):
        assert tracing.current() is None
        assert "traceparent" not in tracing.stamp(event())


def test_an_event_keeps_the_context_it_has(off: None) -> None:
    stored = event()
    stored["traceparent"] = PARENT
    with tracing.span("redelivery", parent="00-11111111111111111111111111111111-2222222222222222-01"):
        assert tracing.stamp(stored)["traceparent"] == PARENT


def test_on_a_span_continues_the_trace_with_its_own_id(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # on; the spans go to memory instead
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", lambda: provider.get_tracer("test"))
    with tracing.span("io.example.command", parent=PARENT, kind="CONSUMER"):
        ours = tracing.current()
    assert ours is not None and ours != PARENT
    assert tracing.trace_id(ours) == tracing.trace_id(PARENT), "the same trace"
    (finished,) = exporter.get_finished_spans()
    assert finished.name == "io.example.command"
    assert format(finished.parent.span_id, "016x") == PARENT.split("-")[2]
    assert format(finished.context.span_id, "016x") == ours.split("-")[2]


def test_the_asgi_wrapper_takes_a_delivered_events_context(off: None) -> None:
    seen: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(tracing.current())
        seen.append(tracing.stamp(event()).get("tracestate"))

    # ce- values come percent-encoded (saga.eventing.binding): the state is the decoded one, never re-encoded
    headers = [(b"ce-type", b"io.example"), (b"ce-traceparent", PARENT.encode()), (b"ce-tracestate", b"a=1,%20b=2"),
               (b"traceparent", b"00-11111111111111111111111111111111-2222222222222222-01")]
    asyncio.run(tracing.traced(app)({"type": "http", "method": "POST", "path": "/", "headers": headers}, None, None))
    assert seen == [PARENT, "a=1, b=2"], "the event's own context, not the hop's"


def test_an_oversized_tracestate_is_dropped(off: None) -> None:
    with tracing.span("work", parent=PARENT, state="k=" + "v" * 600):
        assert "tracestate" not in tracing.stamp(event())


def test_a_tracer_that_cannot_be_set_up_leaves_requests_untraced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")

    def broken() -> None:
        raise RuntimeError("a bad OTEL_ setting")

    monkeypatch.setattr(tracing, "_sdk_tracer", broken)
    with tracing.span("work", parent=PARENT):
        assert tracing.current() == PARENT, "passed through, as with tracing off"

"""One trace per saga: from `POST /orders` through every Kafka hop to the final state, every span of an
order shares one trace id, and the chain of parents is the chain of the saga's commands and replies as its
history records them. The local stack's functions export to an OTLP receiver of the test's own."""

from __future__ import annotations

import time
from typing import Any

import pytest

from localstack.otlp import Receiver, Span
from localstack.stack import Stack
from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e

REPLY = "io.knativesaga.saga.reply"


def saga_of(api: Api, token: str, order_id: str) -> dict[str, Any]:
    answer = api.call("order", "GET", f"/orders/{order_id}/saga", token=token)
    assert answer.status_code == 200, answer.text
    return answer.json()


def expected_chain(saga: dict[str, Any]) -> list[str]:
    """The request that started the saga, then each command the history says was sent and its reply."""
    sent = [h["commandType"] for h in saga["history"] if h["event"] in ("COMMAND_SENT", "COMPENSATION_SENT")]
    return ["POST /orders", *(name for command in sent for name in (command, REPLY))]


def chain(spans: list[Span]) -> list[Span]:
    """From the trace's first span, each hop's first child: the path the saga's events took."""
    path = [spans[0]]
    while True:
        children = [s for s in spans if s.parent_id == path[-1].span_id]
        if not children:
            return path
        path.append(children[0])  # spans are in start order: a redelivery's span would come later


def settled_trace(traces: Receiver, trace_id: str, length: int) -> list[Span]:
    """The trace's spans once its chain is `length` long (bounded: spans are batched for 200 ms)."""
    deadline = time.monotonic() + 30
    while True:
        spans = traces.of_trace(trace_id)
        if spans and len(chain(spans)) >= length:
            return spans
        assert time.monotonic() < deadline, f"the trace has {[s.name for s in spans]}"
        time.sleep(0.2)


@pytest.mark.parametrize(("quantity", "amount", "state"), [(1, 10, "APPROVED"), (11, 110, "REJECTED")])
def test_one_trace_per_saga_through_every_hop(api: Api, stack: Stack, traces: Receiver, customer: Customer,
                                              quantity: int, amount: int, state: str) -> None:
    placed = api.place_order(customer.token, order_body(customer.customer_id, 2, quantity, amount))
    order_id = placed.json()["orderId"]
    assert api.settled(customer.token, order_id)["state"] == state
    saga = saga_of(api, customer.token, order_id)
    wanted = expected_chain(saga)
    assert len(wanted) >= 5, "a command and its reply at least per participant step"

    spans = settled_trace(traces, saga["traceId"], len(wanted))
    assert [s.name for s in chain(spans)] == wanted
    root = chain(spans)[0]
    assert (root.parent_id, root.service) == ("", "order-api"), "the trace starts at the order's request"
    ours = traces.with_attribute("saga.id", order_id)
    assert len(ours) == len(wanted) - 1, "a span per delivered event of this saga"
    assert {s.trace_id for s in ours} == {saga["traceId"]}, "every span of the order shares one trace id"
    services = [s.service for s in chain(spans)[1:]]
    assert services[1::2] == ["order-saga"] * (len(services) // 2), "every reply is handled by order-saga"


def test_a_callers_trace_is_continued(api: Api, stack: Stack, traces: Receiver, customer: Customer) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    placed = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10),
                             traceparent=f"00-{caller_trace}-{caller_span}-01")
    order_id = placed.json()["orderId"]
    api.settled(customer.token, order_id)
    saga = saga_of(api, customer.token, order_id)
    assert saga["traceId"] == caller_trace
    spans = settled_trace(traces, caller_trace, len(expected_chain(saga)))
    assert spans[0].parent_id == caller_span and spans[0].name == "POST /orders"

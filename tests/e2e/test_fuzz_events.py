"""Hostile CloudEvents to every event-driven function, as the dispatcher would deliver them (and
through the broker ingress, as a publisher would): malformed, oversized, wrong-typed data, missing
extensions, unknown types, random attributes and data. Each is refused with a 4xx problem (which
the dispatcher sends to the dead-letter sink, never retried: no crash loop) and changes nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstack.stack import Stack
from saga.messages import CAUSATION_ID, PARTITION_KEY, REPLY_KIND, REPLY_OUTCOME, SAGA_ID, SAGA_STEP, SAGA_TYPE
from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e

# Each event-driven function and the event type its Trigger routes to it.
TARGETS = {
    "order-saga": "io.knativesaga.saga.reply",
    "goods-reserve": "io.knativesaga.goods.reserve",
    "goods-release": "io.knativesaga.goods.release",
    "account-reserve-credit": "io.knativesaga.account.reservecredit",
    "account-release-credit": "io.knativesaga.account.releasecredit",
    "account-provision": "io.knativesaga.user.registered",
}
SAGA_EXTENSIONS = {SAGA_TYPE: "CreateOrderSaga", SAGA_STEP: "1"}


def headers(event_type: str, **extensions: str) -> dict[str, str]:
    saga_id = str(uuid.uuid4())
    found = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/fuzz", "ce-type": event_type,
             "content-type": "application/json", f"ce-{SAGA_ID}": saga_id, f"ce-{PARTITION_KEY}": saga_id}
    found.update({f"ce-{k}": v for k, v in {**SAGA_EXTENSIONS, **extensions}.items()})
    if event_type.endswith("saga.reply"):
        found.update({f"ce-{CAUSATION_ID}": str(uuid.uuid4()), f"ce-{REPLY_KIND}": "GoodsReserved",
                      f"ce-{REPLY_OUTCOME}": "SUCCESS"})
    return found


def without(found: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in found.items() if k not in {f"ce-{n}" for n in names}}


BAD_DATA = [
    {"goods_id": "one", "quantity": 1}, {"goods_id": 1.5, "quantity": 1e300}, {"goods_id": 2**70, "quantity": 1},
    {"customer_id": 12, "amount": "NaN"}, {"customer_id": "x\u0000y", "amount": "Infinity"},
    {"user_id": None, "customer_id": ["a"], "username": {}}, [], "text", None,
]

CASES: dict[str, Any] = {
    "not a CloudEvent": lambda t: ({"content-type": "application/json"}, b'{"goods_id": 1}'),
    "malformed JSON": lambda t: (headers(t), b'{"goods_id": 1,'),
    "binary garbage": lambda t: ({**headers(t), "content-type": "application/octet-stream"}, bytes(range(256)) * 4),
    "oversized": lambda t: (headers(t), json.dumps({"goods_id": 1, "pad": "x" * 3_000_000}).encode()),
    "unknown type": lambda t: (headers("io.knativesaga.unknown"), b"{}"),
    "missing saga id": lambda t: (without(headers(t), SAGA_ID), b'{"goods_id": 1, "quantity": 1}'),
    "missing saga type": lambda t: (without(headers(t), SAGA_TYPE), b'{"goods_id": 1, "quantity": 1}'),
    "missing spec version": lambda t: (without(headers(t), "specversion"), b"{}"),
    **{f"wrong data {n}": (lambda t, d=d: (headers(t), json.dumps(d).encode())) for n, d in enumerate(BAD_DATA)},
}


def snapshot(stack: Stack) -> dict[str, Any]:
    """Everything an event could change: stock, credit, reservations, sagas, accounts, inboxes."""
    queries = {
        "stock": "SELECT coalesce(sum(stock), 0) FROM goods.goods",
        "goods reservations": "SELECT count(*) FROM goods.reservations",
        "credit": "SELECT coalesce(sum(available_credit), 0) FROM accounts.accounts",
        "accounts": "SELECT count(*) FROM accounts.accounts",
        "credit reservations": "SELECT count(*) FROM accounts.credit_reservations",
        "saga versions": "SELECT coalesce(sum(version), 0) FROM orders.saga_instances",
        "inboxes": "SELECT (SELECT count(*) FROM goods.inbox) + (SELECT count(*) FROM accounts.inbox)"
                   " + (SELECT count(*) FROM orders.inbox)",
    }
    with sa.create_engine(stack.infra.database_url).connect() as tx:
        return {name: tx.execute(sa.text(sql)).scalar_one() for name, sql in queries.items()}


def quiet_snapshot(stack: Stack) -> dict[str, Any]:
    """A snapshot once no saga is moving (earlier tests' orders have all ended)."""
    deadline = time.monotonic() + 60
    while True:
        first = snapshot(stack)
        time.sleep(0.5)
        if snapshot(stack) == first:
            return first
        assert time.monotonic() < deadline, "the stack never went quiet"


@pytest.mark.parametrize("function", list(TARGETS))
def test_hostile_events_are_refused_and_change_nothing(stack: Stack, function: str) -> None:
    before = quiet_snapshot(stack)
    with httpx.Client(base_url=stack.url(function), timeout=30) as client:
        for name, make in CASES.items():
            sent_headers, body = make(TARGETS[function])
            answer = client.post("/", headers=sent_headers, content=body)
            assert 400 <= answer.status_code < 500, f"{function}, {name}: {answer.status_code} {answer.text[:300]}"
            if answer.status_code != 413:  # the size limit answers before the function runs
                assert answer.headers["Content-Type"].startswith("application/problem+json"), name
    assert snapshot(stack) == before


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    function=st.sampled_from(list(TARGETS)),
    extensions=st.dictionaries(st.sampled_from([SAGA_TYPE, SAGA_STEP, CAUSATION_ID, REPLY_KIND, REPLY_OUTCOME]),
                               st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20)),
    data=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                      lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                   max_size=4), max_leaves=12),
)
def test_random_events_never_fail_the_function(stack: Stack, function: str, extensions: dict[str, str],
                                               data: Any) -> None:
    """Whatever arrives, the answer is a decision (2xx, or 4xx for the dead-letter sink), never a 5xx
    that would have it redelivered forever."""
    sent = headers(TARGETS[function], **extensions)
    answer = httpx.post(stack.url(function), headers=sent, content=json.dumps(data).encode(), timeout=30)
    assert answer.status_code < 500, f"{function}: {answer.status_code} {answer.text[:300]}"


def _dead_letters(stack: Stack, wanted: set[str], timeout: float = 60.0) -> set[str]:
    """The ids among `wanted` that reached the dead-letter topic within `timeout`."""
    topic = stack.topology.dead_letter_topics[0]
    consumer = Consumer({"bootstrap.servers": stack.infra.kafka_bootstrap, "group.id": f"fuzz-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 2})
    found: set[str] = set()
    try:
        partitions = consumer.list_topics(topic, timeout=20).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + timeout
        while found != wanted and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            event_id = dict(message.headers() or []).get("ce_id", b"").decode()
            if event_id in wanted:
                found.add(event_id)
    finally:
        consumer.close()
    return found


def test_published_poison_events_go_to_dead_letters_and_orders_go_on(
    api: Api, stack: Stack, customer: Customer
) -> None:
    ingress = stack.ingress_url
    poison = {}
    for function, event_type in TARGETS.items():
        sent = headers(event_type)
        poison[sent["ce-id"]] = function
        answer = httpx.post(ingress, headers=sent, content=json.dumps({"goods_id": "poison"}).encode(), timeout=30)
        assert answer.status_code == 202, f"the ingress takes any well-formed event: {answer.status_code}"
    too_big = httpx.post(ingress, headers=headers(TARGETS["goods-reserve"]), timeout=30,
                         content=json.dumps({"pad": "x" * 2_000_000}).encode())
    assert too_big.status_code == 413
    assert httpx.post(ingress, headers={"content-type": "application/json"}, content=b"{}").status_code == 400
    assert _dead_letters(stack, set(poison)) == set(poison), "every poison event parked, once refused"
    placed = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10))
    assert api.settled(customer.token, placed.json()["orderId"])["state"] == "APPROVED", "and the functions go on"

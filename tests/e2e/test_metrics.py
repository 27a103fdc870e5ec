"""Every function's /metrics after a known sequence of orders: each count equals what happened.

The sequence: two approved orders, one refused for credit (goods given back), one whose goods-reserve
is frozen past the step deadline (timed out by the sweep, goods released, its late answer ignored), a
reply sent twice to a finished saga (ignored, then answered from the inbox), an event no function can
read (rejected: the dispatcher dead-letters it). Counters live in each function's process, so the test
scrapes before and after, compares the differences, and checks that no process restarted in between.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localstack.stack import Stack
from saga.messages import CAUSATION_ID, REPLY_KIND, REPLY_OUTCOME, SAGA_ID, SAGA_STEP, SAGA_TYPE
from tests.e2e.client import Api, Customer, order_body
from tests.e2e.test_timeouts import frozen

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
SAGA = "CreateOrderSaga"


def scrape(stack: Stack) -> tuple[Samples, dict[str, float]]:
    """Every sample of every function and the dispatcher, summed over processes; and each function's
    process start time (a restart would reset its counters)."""
    samples: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    started: dict[str, float] = {}
    targets = {name: stack.url(name) for name in stack.ports} | {
        "dispatcher": f"http://127.0.0.1:{stack.dispatcher_metrics_port}"}
    for name, url in targets.items():
        answer = httpx.get(f"{url}/metrics", timeout=30)
        assert answer.status_code == 200, f"{name}: {answer.status_code}"
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                if sample.name == "process_start_time_seconds":
                    started[name] = sample.value
                samples[(sample.name, tuple(sorted(sample.labels.items())))] += sample.value
    return dict(samples), started


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """The change of the samples called `name` whose labels include `labels`."""
    def total(samples: Samples) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())
    return round(total(after) - total(before), 6)


def value(samples: Samples, name: str, **labels: str) -> list[float]:
    return [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]


def reply_to_finished_saga(order_id: str) -> tuple[dict[str, str], bytes]:
    """A reply no saga awaits (its saga has finished), as the dispatcher would deliver it."""
    return {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/goods/reserve",
            "ce-type": "io.knativesaga.saga.reply", "content-type": "application/json",
            f"ce-{SAGA_ID}": order_id, f"ce-{SAGA_TYPE}": SAGA, f"ce-{SAGA_STEP}": "1",
            f"ce-{CAUSATION_ID}": str(uuid.uuid4()), f"ce-{REPLY_KIND}": "GoodsReserved",
            f"ce-{REPLY_OUTCOME}": "SUCCESS"}, json.dumps({"unit_price": "10.00"}).encode()


def quiet(stack: Stack, deadline: float) -> Samples:
    """Scrape until every Trigger's lag is 0 and every outbox's backlog is 0 (bounded)."""
    while True:
        samples, _ = scrape(stack)
        lags = value(samples, "dispatcher_consumer_lag")
        backlog = value(samples, "saga_outbox_backlog")
        if lags and not any(lags) and not any(backlog):
            return samples
        assert time.monotonic() < deadline, f"not quiet: lags {lags}, outbox backlogs {backlog}"
        time.sleep(0.5)


def test_metrics_count_what_happened(api: Api, stack: Stack, customer: Customer) -> None:
    # Every function of the sequence warm first, so none scales to zero (and loses its counts) mid-test.
    warm = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10))
    api.settled(customer.token, warm.json()["orderId"])
    before, started = scrape(stack)

    approved = [api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10)).json()["orderId"]
                for _ in range(2)]
    no_credit = api.place_order(customer.token, order_body(customer.customer_id, 2, 9, 90)).json()["orderId"]
    assert [api.settled(customer.token, o)["state"] for o in approved] == ["APPROVED", "APPROVED"]
    assert api.settled(customer.token, no_credit)["rejectionReason"] == "INSUFFICIENT_CREDIT"
    with frozen(stack, "goods-reserve"):
        silent = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10)).json()["orderId"]
        assert api.settled(customer.token, silent)["rejectionReason"] == "TIMED_OUT"
    headers, body = reply_to_finished_saga(approved[0])
    for _ in range(2):
        assert httpx.post(stack.url("order-saga"), headers=headers, content=body, timeout=30).status_code < 300
    poison = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/test", "content-type":
              "application/json", "ce-type": "io.knativesaga.goods.reserve", f"ce-{SAGA_ID}": str(uuid.uuid4()),
              f"ce-{SAGA_TYPE}": SAGA, f"ce-{SAGA_STEP}": "1"}
    published = httpx.post(stack.ingress_url, headers=poison, content=b'{"goods_id": "poison"}', timeout=30)
    assert published.status_code == 202

    deadline = time.monotonic() + 60
    while True:  # the frozen participant's late answer, and the poison's dead letter, come in their own time
        after = quiet(stack, deadline)
        if (delta(before, after, "saga_replies_ignored_total", saga_type=SAGA) >= 2
                and delta(before, after, "dispatcher_dead_letters_total") >= 1):
            break
        assert time.monotonic() < deadline, "the late answer was never ignored, or the poison never dead-lettered"
        time.sleep(0.5)
    _, started_after = scrape(stack)
    restarted = [name for name, at in started.items() if started_after.get(name) != at]
    assert not restarted, f"restarted mid-test (their counts were reset): {restarted}"

    def d(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    assert d("saga_started_total", saga_type=SAGA, version="1") == 4
    assert d("saga_finished_total", saga_type=SAGA, outcome="COMPLETED") == 2
    assert d("saga_finished_total", saga_type=SAGA, outcome="COMPENSATED") == 2
    assert d("saga_duration_seconds_count", saga_type=SAGA, outcome="COMPLETED") == 2
    assert d("saga_duration_seconds_count", saga_type=SAGA, outcome="COMPENSATED") == 2
    assert d("saga_duration_seconds_sum", saga_type=SAGA, outcome="COMPENSATED") >= 10, "the timed-out one took 10 s+"
    # Accepted replies, per step: reserve_goods answered for three orders (not the frozen one), reserve_credit
    # for three, release_goods (the compensation) for the credit refusal and the timeout.
    assert d("saga_step_seconds_count", saga_type=SAGA, step="reserve_goods", direction="invoke") == 3
    assert d("saga_step_seconds_count", saga_type=SAGA, step="reserve_credit", direction="invoke") == 3
    assert d("saga_step_seconds_count", saga_type=SAGA, step="release_goods", direction="compensate") == 2
    assert d("saga_commands_sent_total", saga_type=SAGA, direction="invoke", send="first") == 7
    assert d("saga_commands_sent_total", saga_type=SAGA, direction="compensate", send="first") == 2
    assert d("saga_timeouts_total", saga_type=SAGA, step="reserve_goods") == 1
    assert d("saga_sweep_actions_total", saga_type=SAGA, action="timed_out") == 1
    assert d("saga_sweep_lateness_seconds_count", saga_type=SAGA) == 1
    # The frozen participant's late answer and the first of the two sent: both to finished sagas.
    assert d("saga_replies_ignored_total", saga_type=SAGA, reason="finished") == 2
    assert d("saga_parked_total") == d("saga_retries_scheduled_total") == 0
    assert d("saga_inbox_duplicates_total", consumer="order-saga") == 1
    # order-saga: 2 replies each for two approved orders, 2 + 1 (the compensation) for the credit refusal,
    # the compensation's reply and the late answer for the timeout, the reply sent twice.
    assert d("saga_events_handled_total", consumer="order-saga", result="handled") == 11
    assert d("saga_events_handled_total", consumer="goods-reserve", result="rejected") == 1
    assert d("saga_events_handled_total", result="failed") == 0
    # The outbox carries each saga's first command (order-api) and the sweep's (the timeout's compensation).
    assert d("saga_outbox_published_total", outbox="orders.outbox") == 5
    assert value(after, "saga_outbox_oldest_age_seconds", outbox="orders.outbox") == [0.0]
    triggers = {t.name for t in stack.topology.triggers}
    assert {dict(ls)["trigger"] for (n, ls) in after if n == "dispatcher_consumer_lag"} == triggers
    assert d("dispatcher_dead_letters_total") == 1
    assert d("dispatcher_deliveries_total", outcome="failed") == 1

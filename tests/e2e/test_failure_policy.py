"""Compensations that fail, through the whole stack: the goods participant refuses every return during
a stocktake, so a rejected order's release is tried again with backoff (4 tries on the test stack),
then the saga is PARKED with its order PENDING until an admin resumes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from functions.goods.schema import goods
from localstack.stack import Stack
from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e

APPLE, APPLE_PRICE = 2, 10  # the demo catalogue's
TOO_DEAR = 11  # apples: 110.00, past a new customer's 100.00 of credit, so goods are reserved then released


@contextmanager
def stocktake(stack: Stack, goods_id: int) -> Iterator[Any]:
    """The item counted until the block ends (or `end()` is called): goods-release refuses returns."""
    db = sa.create_engine(stack.infra.database_url)

    def mark(counting: bool) -> None:
        with db.begin() as tx:
            tx.execute(sa.update(goods).where(goods.c.id == goods_id).values(stocktake=counting))

    mark(True)
    try:
        yield lambda: mark(False)
    finally:
        mark(False)
        db.dispose()


def saga(api: Api, token: str, order_id: str) -> dict[str, Any]:
    found = api.call("order", "GET", f"/orders/{order_id}/saga", token=token)
    assert found.status_code == 200, found.text
    return found.json()


def wait_for(api: Api, token: str, order_id: str, done: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not done(current := saga(api, token, order_id)):
        assert time.monotonic() < deadline, f"{what}: {[h['event'] for h in current['history']]}"
        time.sleep(0.1)
    return current


def place_too_dear(api: Api, customer: Customer) -> str:
    placed = api.place_order(customer.token, order_body(customer.customer_id, APPLE, TOO_DEAR, TOO_DEAR * APPLE_PRICE))
    assert placed.status_code == 202, placed.text
    return str(placed.json()["orderId"])


def events(found: dict[str, Any]) -> list[str]:
    return [h["event"] for h in found["history"]]


def test_a_compensation_refused_twice_is_retried_and_succeeds(api: Api, stack: Stack, customer: Customer) -> None:
    with stocktake(stack, APPLE) as end:
        order_id = place_too_dear(api, customer)
        wait_for(api, customer.token, order_id, lambda s: events(s).count("RETRY_SCHEDULED") == 2,
                 "the release refused twice")
        end()
        order = api.settled(customer.token, order_id)
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    found = saga(api, customer.token, order_id)
    releases = [h for h in found["history"] if h["event"] == "COMPENSATION_SENT" and h["name"] == "release_goods"]
    # Refused twice; the third try meets the stocktake's end (or, on a slow box, the fourth does).
    assert [h.get("attempt", 1) for h in releases] in ([1, 2, 3], [1, 2, 3, 4])
    assert len({h["commandId"] for h in releases}) == len(releases), "each retry under a new id"
    assert events(found).count("COMPENSATION_DONE") == 2 and found["state"] == "COMPENSATED"  # goods, the order
    assert "PARKED" not in events(found)


def test_a_compensation_that_never_succeeds_parks_the_saga_until_an_admin_resumes_it(
    api: Api, stack: Stack, customer: Customer, admin_token: str
) -> None:
    with stocktake(stack, APPLE) as end:
        order_id = place_too_dear(api, customer)
        parked = wait_for(api, customer.token, order_id, lambda s: s["state"] == "PARKED", "never parked")
        assert parked["parkedReason"] == "waiting for an operator", "the operators' notes are theirs"
        seen_by_admin = saga(api, admin_token, order_id)
        assert seen_by_admin["parkedReason"] == "release_goods answered GoodsReleaseRefused, 4 attempt(s) of 4"
        assert api.call("order", "GET", f"/orders/{order_id}", token=customer.token).json()["state"] == "PENDING"
        # A cancel meanwhile is refused without Retry-After: it waits for a person, not for a moment.
        cancel = api.call("order", "POST", f"/orders/{order_id}/cancel", token=customer.token)
        assert cancel.status_code == 409 and "Retry-After" not in cancel.headers
        assert "PARKED" in cancel.json()["detail"]
        listed = api.call("order", "GET", "/admin/sagas", token=admin_token, params={"state": "PARKED"})
        assert listed.status_code == 200, listed.text
        assert order_id in [s["sagaId"] for s in listed.json()]
        assert api.call("order", "GET", "/admin/sagas", token=customer.token).status_code == 403
        refused = api.call("order", "POST", f"/admin/sagas/{order_id}/resume", token=customer.token)
        assert refused.status_code == 403 and refused.headers["content-type"] == "application/problem+json"
        end()  # the cause is fixed
        resumed = api.call("order", "POST", f"/admin/sagas/{order_id}/resume", token=admin_token)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "COMPENSATING" and events(resumed.json())[-2:] == ["RESUMED", "COMPENSATION_SENT"]
    order = api.settled(customer.token, order_id)
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    again = api.call("order", "POST", f"/admin/sagas/{order_id}/resume", token=admin_token)
    assert again.status_code == 409 and "is COMPENSATED" in again.json()["detail"]


def test_the_admin_list_filters_by_state_type_and_age(api: Api, admin_token: str) -> None:
    listed = api.call("order", "GET", "/admin/sagas", token=admin_token,
                      params={"state": "COMPENSATED", "type": "CreateOrderSaga", "olderThan": 0, "limit": 5})
    assert listed.status_code == 200, listed.text
    assert {s["state"] for s in listed.json()} <= {"COMPENSATED"} and len(listed.json()) <= 5
    assert all(s["sagaType"] == "CreateOrderSaga" for s in listed.json())
    assert api.call("order", "GET", "/admin/sagas", token=admin_token,
                    params={"olderThan": 10**6}).json() == [], "nothing here is 11 days old"
    for bad in ({"state": "STUCK"}, {"type": "no spaces"}, {"olderThan": "-1"}, {"limit": "0"}):
        refused = api.call("order", "GET", "/admin/sagas", token=admin_token, params=bad)
        assert refused.status_code == 422, (bad, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    unknown = api.call("order", "POST", "/admin/sagas/00000000-0000-0000-0000-000000000000/resume", token=admin_token)
    assert unknown.status_code == 404

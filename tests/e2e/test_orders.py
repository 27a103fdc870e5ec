"""The contract's order flows through HTTP on the whole local stack: every outcome, its
compensation, idempotency, and validation that changes nothing."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e

CHICKEN, APPLE = 1, 2


def test_walkthrough_approved_order_reserves_goods_and_credit(api: Api, customer: Customer) -> None:
    stock_before = api.goods(customer.token, CHICKEN)["stock"]
    placed = api.place_order(customer.token, order_body(customer.customer_id, CHICKEN, 2, 74))
    assert placed.status_code == 202, placed.text
    assert placed.json()["state"] in ("PENDING", "APPROVED")
    assert placed.headers["Location"] == f"/orders/{placed.json()['orderId']}"
    order = api.settled(customer.token, placed.json()["orderId"])
    assert order["state"] == "APPROVED"
    assert order["rejectionReason"] is None
    assert order["orderTotal"] == {"amount": "74.00"}
    assert api.account(customer.token, customer.customer_id)["availableCredit"] == "26.00"
    assert api.goods(customer.token, CHICKEN)["stock"] == stock_before - 2


def test_walkthrough_credit_limit_rejects_and_releases_goods(api: Api, customer: Customer) -> None:
    stock_before = api.goods(customer.token, CHICKEN)["stock"]
    placed = api.place_order(customer.token, order_body(customer.customer_id, CHICKEN, 3, 111))
    order = api.settled(customer.token, placed.json()["orderId"])
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", "INSUFFICIENT_CREDIT")
    assert api.goods(customer.token, CHICKEN)["stock"] == stock_before, "the reserved goods were released"
    assert api.account(customer.token, customer.customer_id)["availableCredit"] == "100.00"
    saga = api.call("order", "GET", f"/orders/{order['orderId']}/saga", token=customer.token).json()
    assert saga["finished"] and saga["compensating"]
    events = [(h["event"], h["name"]) for h in saga["history"]]
    assert ("COMPENSATION_SENT", "release_goods") in events
    assert events[-2:] == [("COMPENSATION_DONE", "reject"), ("FINISHED", "CreateOrderSaga")]


@pytest.mark.parametrize(
    ("goods_id", "quantity", "amount", "reason"),
    [
        (999_999, 1, 10, "UNKNOWN_GOODS"),
        (APPLE, 100_000, "1000000.00", "INSUFFICIENT_GOODS"),
        (CHICKEN, 2, 70, "PRICE_MISMATCH"),
    ],
)
def test_rejections_leave_stock_and_credit_unchanged(
    api: Api, customer: Customer, goods_id: int, quantity: int, amount: object, reason: str
) -> None:
    stock_before = {g: api.goods(customer.token, g)["stock"] for g in (CHICKEN, APPLE)}
    placed = api.place_order(customer.token, order_body(customer.customer_id, goods_id, quantity, amount))
    assert placed.status_code == 202, placed.text
    order = api.settled(customer.token, placed.json()["orderId"])
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", reason)
    assert {g: api.goods(customer.token, g)["stock"] for g in (CHICKEN, APPLE)} == stock_before
    assert api.account(customer.token, customer.customer_id)["availableCredit"] == "100.00"


def test_unknown_customer_is_rejected_after_releasing_goods(api: Api, admin_token: str) -> None:
    stock_before = api.goods(admin_token, APPLE)["stock"]
    placed = api.place_order(admin_token, order_body(f"nobody-{uuid.uuid4().hex[:8]}", APPLE, 1, "10.00"))
    order = api.settled(admin_token, placed.json()["orderId"])
    assert (order["state"], order["rejectionReason"]) == ("REJECTED", "UNKNOWN_CUSTOMER")
    assert api.goods(admin_token, APPLE)["stock"] == stock_before


def test_amount_as_decimal_string_is_exact(api: Api, customer: Customer) -> None:
    placed = api.place_order(customer.token, order_body(customer.customer_id, APPLE, 3, "30.00"))
    order = api.settled(customer.token, placed.json()["orderId"])
    assert order["state"] == "APPROVED"
    assert Decimal(api.account(customer.token, customer.customer_id)["availableCredit"]) == Decimal("70.00")


def test_same_idempotency_key_returns_the_same_order(api: Api, customer: Customer) -> None:
    key = uuid.uuid4().hex
    body = order_body(customer.customer_id, APPLE, 1, 10)
    first = api.place_order(customer.token, body, **{"Idempotency-Key": key})
    second = api.place_order(customer.token, body, **{"Idempotency-Key": key})
    assert first.status_code == second.status_code == 202
    assert first.json()["orderId"] == second.json()["orderId"]
    api.settled(customer.token, first.json()["orderId"])
    orders = api.call("order", "GET", "/orders", token=customer.token).json()
    assert [o["orderId"] for o in orders] == [first.json()["orderId"]]
    assert api.account(customer.token, customer.customer_id)["availableCredit"] == "90.00"
    reused = api.place_order(customer.token, order_body(customer.customer_id, APPLE, 2, 20), **{"Idempotency-Key": key})
    assert reused.status_code == 422
    assert reused.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customerId": "X", "goodsId": 1, "goodsTotal": 0, "orderTotal": {"amount": 1}}, "goodsTotal"),
        ({"customerId": "X", "goodsId": "one", "goodsTotal": 1, "orderTotal": {"amount": 1}}, "goodsId"),
        ({"customerId": "X", "goodsId": 1, "goodsTotal": 1, "orderTotal": {"amount": -5}}, "amount"),
        ({"customerId": "X", "goodsId": 1, "goodsTotal": 1, "orderTotal": {"amount": "1.001"}}, "amount"),
        ({"customerId": "X", "goodsId": 1, "goodsTotal": 1}, "orderTotal"),
    ],
)
def test_invalid_order_is_422_problem_naming_the_field_and_changes_nothing(
    api: Api, customer: Customer, body: dict[str, object], field: str
) -> None:
    body = {**body, "customerId": customer.customer_id}
    response = api.place_order(customer.token, body)
    assert response.status_code == 422
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert field in response.text
    assert api.call("order", "GET", "/orders", token=customer.token).json() == []


def test_malformed_json_is_400_problem(api: Api, customer: Customer) -> None:
    response = api.call(
        "order", "POST", "/orders", token=customer.token, content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["status"] == 400
    assert api.call("order", "GET", "/orders", token=customer.token).json() == []

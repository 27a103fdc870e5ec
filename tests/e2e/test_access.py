"""Who may do what: 401 without a valid token, 403 on another customer's resources."""

from __future__ import annotations

import pytest

from tests.e2e.client import Api, Customer, order_body
from tests.e2e.conftest import GATEWAY

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("service", "method", "path"),
    [
        ("order", "POST", "/orders"),
        ("order", "GET", "/orders"),
        ("goods", "GET", "/goods/1"),
        ("account", "GET", "/account/12223"),
    ],
)
@pytest.mark.parametrize("token", [None, "not-a-jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_missing_or_bad_token_is_401_problem(api: Api, service: str, method: str, path: str, token: str | None) -> None:
    response = api.call(service, method, path, token=token, json={} if method == "POST" else None)
    if GATEWAY:
        # Through Istio the gateway refuses first, in Envoy's words: 401 for a bad token, 403 for none
        # (README, "Contract changes"). The function's own problem+json answer is checked locally.
        assert response.status_code in (401, 403)
        return
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


def test_customer_cannot_order_for_another_customer(api: Api, customer: Customer) -> None:
    response = api.place_order(customer.token, order_body("12223", 1, 1, 37))
    assert response.status_code == 403
    assert api.call("order", "GET", "/orders", token=customer.token).json() == []


def test_customer_cannot_read_another_account_or_order(api: Api, customer: Customer, lisa_token: str) -> None:
    assert api.call("account", "GET", "/account/12223", token=customer.token).status_code == 403
    other = api.new_customer()
    placed = api.place_order(other.token, order_body(other.customer_id, 2, 1, 10))
    order_id = placed.json()["orderId"]
    assert api.call("order", "GET", f"/orders/{order_id}", token=customer.token).status_code == 403
    assert api.call("order", "GET", f"/orders/{order_id}/saga", token=customer.token).status_code == 403
    api.settled(other.token, order_id)


def test_admin_sees_every_order_and_account(api: Api, admin_token: str, customer: Customer) -> None:
    placed = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10))
    order_id = placed.json()["orderId"]
    api.settled(customer.token, order_id)
    mine = api.call("order", "GET", "/orders", token=admin_token, params={"customerId": customer.customer_id})
    assert [o["orderId"] for o in mine.json()] == [order_id]
    assert api.call("account", "GET", f"/account/{customer.customer_id}", token=admin_token).status_code == 200


def test_demo_user_reads_own_account(api: Api, lisa_token: str) -> None:
    account = api.account(lisa_token, "12223")
    assert account["customerId"] == "12223"
    assert "creditLimit" in account and "availableCredit" in account

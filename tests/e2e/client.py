"""An HTTP client for the contract, against the local stack or a cluster's ingress gateway.

Locally each service has its own port (CONTRACT.md); through Istio every path is served on one
host. `SAGA_E2E_BASE_URL` (+ `SAGA_E2E_HOST` for the Host header) selects the gateway mode.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

SERVICES = ("order", "goods", "account", "auth", "console")
ADMIN_PASSWORD = os.environ.get("SAGA_ADMIN_PASSWORD", "admin-password-dev")
DEMO_PASSWORD = os.environ.get("SAGA_DEMO_PASSWORD", "lisa-password-dev")
TERMINAL = ("APPROVED", "REJECTED")


class Api:
    def __init__(self, base_urls: Mapping[str, str], host: str | None = None) -> None:
        self._clients = {
            name: httpx.Client(base_url=url, timeout=40.0, headers={"Host": host} if host else None)
            for name, url in base_urls.items()
        }

    def close(self) -> None:
        for client in self._clients.values():
            client.close()

    def call(self, service: str, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self._clients[service].request(method, path, headers=headers, **kwargs)

    def login(self, username: str, password: str) -> dict[str, Any]:
        response = self.call("auth", "POST", "/auth/login", json={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return response.json()

    def new_customer(self) -> Customer:
        """A freshly registered user whose credit account (100.00) has been provisioned."""
        username = f"e2e-{uuid.uuid4().hex[:16]}"
        password = f"pw-{uuid.uuid4().hex}"
        registered = self.call("auth", "POST", "/auth/register", json={"username": username, "password": password})
        assert registered.status_code == 201, registered.text
        token = self.login(username, password)["access_token"]
        customer = Customer(registered.json()["customerId"], token)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.call("account", "GET", f"/account/{customer.customer_id}", token=token).status_code == 200:
                return customer
            time.sleep(0.05)
        raise AssertionError(f"account {customer.customer_id} was not provisioned within 15 s")

    def place_order(self, token: str, body: Mapping[str, Any], **headers: str) -> httpx.Response:
        return self.call("order", "POST", "/orders", token=token, json=body, headers=headers)

    def settled(self, token: str, order_id: str) -> dict[str, Any]:
        """The order once it left PENDING (long-polls with ?wait, bounded)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            response = self.call("order", "GET", f"/orders/{order_id}", token=token, params={"wait": 10})
            assert response.status_code == 200, response.text
            order = response.json()
            if order["state"] in TERMINAL:
                return order
        raise AssertionError(f"order {order_id} still PENDING after 60 s")

    def goods(self, token: str, goods_id: int) -> dict[str, Any]:
        response = self.call("goods", "GET", f"/goods/{goods_id}", token=token)
        assert response.status_code == 200, response.text
        return response.json()

    def account(self, token: str, customer_id: str) -> dict[str, Any]:
        response = self.call("account", "GET", f"/account/{customer_id}", token=token)
        assert response.status_code == 200, response.text
        return response.json()


class Customer:
    def __init__(self, customer_id: str, token: str) -> None:
        self.customer_id = customer_id
        self.token = token


def order_body(customer_id: str, goods_id: int, quantity: int, amount: Any) -> dict[str, Any]:
    return {"customerId": customer_id, "goodsId": goods_id, "goodsTotal": quantity, "orderTotal": {"amount": amount}}

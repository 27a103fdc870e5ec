"""The HTTP contract fuzzed from its OpenAPI document (docs/openapi.yaml) with schemathesis: valid and
invalid requests to every operation. No 5xx, every answer conforms to the document (status code,
content type, body schema; every error problem+json), invalid data is rejected, and a rejected
order changes nothing. The console's admin API is fuzzed with a customer's token, so every call to
it is refused (it never resumes a saga or redrives a dead letter); its answers to an admin are checked
against the document by a test of their own, reads only."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, reject, settings
from schemathesis import checks

from localstack.infra import repo_root
from tests.e2e.client import DEMO_PASSWORD, Api, Customer, order_body

pytestmark = pytest.mark.e2e

SCHEMA = schemathesis.openapi.from_path(repo_root() / "docs" / "openapi.yaml")
# Unknown query parameters are ignored, as HTTP APIs conventionally do: not generated as "invalid".
SCHEMA.config.generation.update(allow_extra_parameters=False)
TOKEN: dict[str, str] = {}  # the fuzzing customer's access token, once the fixture made it


@SCHEMA.auth()
class Bearer:
    """The fuzzing customer's token on operations that need one; schemathesis itself also sends
    cases without it or with a broken one, and expects those refused."""

    def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> str | None:
        return TOKEN.get("access")

    def set(self, case: schemathesis.Case, data: str, ctx: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}
SERVICE_OF = {"/auth": "auth", "/.well-known": "auth", "/orders": "order", "/admin": "order", "/goods": "goods",
              "/account": "account", "/console": "console"}
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection]
# Both reach the auth function's login, whose failures count per username (lower-cased) and per address.
LOGINS = ("/auth/login", "/console/auth/login")
DEMO_USERS = ("lisa", "admin")  # the dev stack's users, which the other tests sign in as
# Per request: a refused call answers at once; an admin's redrive would wait for every delivery (the
# gateway allows it 300 s), which the fuzzer, no admin, never starts. Well under pytest's 120 s.
REQUEST_TIMEOUT_SECONDS = 30.0


@pytest.fixture(scope="module")
def fuzzing_customer(api: Api) -> Iterator[Customer]:
    """Orders the fuzzer places are its own customer's; failed logins it makes are waited out after."""
    customer = api.new_customer()
    TOKEN["access"] = customer.token
    yield customer
    deadline = time.monotonic() + 30  # the login limits' window on the test stack is 10 s
    lisa = {"username": "lisa", "password": DEMO_PASSWORD}
    while api.call("auth", "POST", "/auth/login", json=lisa).status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(0.5)


def _orders(api: Api, customer: Customer) -> int:
    return len(api.call("order", "GET", "/orders", token=customer.token, params={"limit": 1000}).json())


def _names_a_demo_user(body: Any) -> bool:
    username = body.get("username") if isinstance(body, dict) else None
    return isinstance(username, str) and username.lower() in DEMO_USERS


def test_the_console_answers_an_admin_as_documented(api: Api, admin_token: str, customer: Customer) -> None:
    """What the fuzzer cannot reach, being no admin: the console's reads conform to the document, for a
    compensated saga too (3 x goods 1 is over the credit: rejected, its goods released). Reads only."""
    placed = api.place_order(customer.token, order_body(customer.customer_id, 1, 3, "111.00"))
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["orderId"]
    assert api.settled(customer.token, order_id)["state"] == "REJECTED"
    reads = [("/console/api/sagas", "/console/api/sagas", {"customer": customer.customer_id}),
             ("/console/api/sagas", "/console/api/sagas", {"state": "COMPENSATED", "limit": 500}),
             ("/console/api/sagas/{sagaId}", f"/console/api/sagas/{order_id}", {}),
             ("/console/api/dead-letters", "/console/api/dead-letters", {})]
    for template, path, params in reads:
        response = api.call("console", "GET", path, token=admin_token, params=params)
        assert response.status_code == 200, response.text
        SCHEMA[template]["GET"].validate_response(response)
    shown = api.call("console", "GET", f"/console/api/sagas/{order_id}", token=admin_token).json()
    assert [saga["state"] for saga in shown["sagas"]] == ["COMPENSATED"]
    assert {item["kind"] for item in shown["sagas"][0]["timeline"]["items"]} >= {"command", "compensation"}
    # More digits than int() takes (4300) is a 422 like any other out-of-range number, not a 500.
    huge = api.call("console", "GET", "/console/api/sagas", token=admin_token, params={"limit": "1" * 5000})
    assert huge.status_code == 422, huge.text
    SCHEMA["/console/api/sagas"]["GET"].validate_response(huge)


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_contract_holds_for_any_input(case: schemathesis.Case, api: Api, fuzzing_customer: Customer) -> None:
    if case.path in LOGINS and _names_a_demo_user(case.body):
        reject()  # its failed logins would lock that user out of the other tests for a window
    service = next(name for prefix, name in SERVICE_OF.items() if case.path.startswith(prefix))
    base_url = str(api._clients[service].base_url).rstrip("/")
    before = _orders(api, fuzzing_customer) if case.method == "POST" and case.path == "/orders" else None
    response = case.call(base_url=base_url, timeout=REQUEST_TIMEOUT_SECONDS)
    case.validate_response(response, checks=CHECKS)
    if before is not None and response.status_code >= 400:
        assert _orders(api, fuzzing_customer) == before, "a rejected order changed nothing"
    if case.path.startswith("/console/api/"):  # no admin: refused, or a method no route takes (before any token)
        refused = (401, 403) if case.method.upper() == case.operation.method.upper() else (405,)
        assert response.status_code in refused, "the console's API refuses whoever is not an admin"

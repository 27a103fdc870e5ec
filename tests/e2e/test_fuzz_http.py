"""The HTTP contract fuzzed from its OpenAPI document (docs/openapi.yaml) with schemathesis: valid and
invalid requests to every operation. No 5xx, every answer conforms to the document (status code,
content type, body schema; every error problem+json), invalid data is rejected, and a rejected
order changes nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from localstack.infra import repo_root
from tests.e2e.client import DEMO_PASSWORD, Api, Customer

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
              "/account": "account"}
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance, checks.negative_data_rejection]


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


@SCHEMA.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_contract_holds_for_any_input(case: schemathesis.Case, api: Api, fuzzing_customer: Customer) -> None:
    service = next(name for prefix, name in SERVICE_OF.items() if case.path.startswith(prefix))
    base_url = str(api._clients[service].base_url).rstrip("/")
    before = _orders(api, fuzzing_customer) if case.method == "POST" and case.path == "/orders" else None
    response = case.call(base_url=base_url)
    case.validate_response(response, checks=CHECKS)
    if before is not None and response.status_code >= 400:
        assert _orders(api, fuzzing_customer) == before, "a rejected order changed nothing"

"""The whole local stack for the end-to-end tests (or a cluster's gateway, with SAGA_E2E_BASE_URL),
on a fresh database per run so the books can be checked exactly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa

from localstack.databases import throwaway_database
from localstack.infra import Infra, repo_root, suite_port_shift
from localstack.invariants import unbalanced_books
from localstack.otlp import Receiver
from localstack.stack import Stack
from tests.e2e.client import ADMIN_PASSWORD, DEMO_PASSWORD, SERVICES, Api, Customer

GATEWAY = os.environ.get("SAGA_E2E_BASE_URL")


@pytest.fixture(scope="session")
def e2e_database(infra: Infra) -> Iterator[str]:
    with throwaway_database(infra.database_url, "saga_e2e") as url:
        yield url


# Shorter than production so the tests can watch them act: a step deadline (TIMED_OUT), the retry budget
# of compensations (PARKED after 4 tries, 1 s, 2 s and 4 s apart), the verifiers' JWKS cache (key rotation)
# and the login-limit windows (429, then allowed again).
E2E_ENV = {
    "SAGA_STEP_TIMEOUT_SECONDS": "10",
    "SAGA_RETRY_ATTEMPTS": "4",
    "SAGA_RETRY_FIRST_DELAY_SECONDS": "1",
    "SAGA_JWKS_CACHE_SECONDS": "2",
    "SAGA_LOGIN_USER_WINDOW_SECONDS": "10",
    "SAGA_LOGIN_ADDRESS_WINDOW_SECONDS": "10",
}


@pytest.fixture(scope="session")
def traces() -> Iterator[Receiver]:
    """Where the local stack's functions export their spans (OTLP/HTTP), for the whole session."""
    with Receiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def local_stack(request: pytest.FixtureRequest) -> Iterator[Stack | None]:
    """The whole local stack for the session (None against a cluster's gateway), tracing on: every
    function exports its spans to `traces`, batched for at most 200 ms."""
    if GATEWAY:
        yield None
        return
    infra: Infra = request.getfixturevalue("infra")
    database = request.getfixturevalue("e2e_database")
    receiver: Receiver = request.getfixturevalue("traces")
    env = {**E2E_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    repo = repo_root()
    shift = suite_port_shift()
    root = repo / ".local" / ("test" if not shift else f"test-{shift}")
    with Stack(repo, root, replace(infra, database_url=database), port_offset=10000 + shift,
               idle_seconds=120, ping_every=1.0, env=env) as stack:
        yield stack
        books = unbalanced_books(sa.create_engine(database))
        assert not books, f"the books do not balance after the e2e run: {books}"


@pytest.fixture(scope="session")
def api(local_stack: Stack | None) -> Iterator[Api]:
    if local_stack is None:
        client = Api(dict.fromkeys(SERVICES, GATEWAY or ""), host=os.environ.get("SAGA_E2E_HOST"))
    else:
        client = Api(local_stack.public_urls)
    yield client
    client.close()


@pytest.fixture
def stack(local_stack: Stack | None) -> Stack:
    """For tests that act on the stack itself (freeze a function, roll a Secret): local only."""
    if local_stack is None:
        pytest.skip("acts on the local stack's processes")
    return local_stack


@pytest.fixture
def customer(api: Api) -> Customer:
    return api.new_customer()


@pytest.fixture  # per test: a session-long token would expire (900 s) before the session ends
def admin_token(api: Api) -> str:
    token = os.environ.get("SAGA_E2E_ADMIN_TOKEN")
    if token:
        return token
    if GATEWAY:
        pytest.skip("a cluster has no default admin; set SAGA_E2E_ADMIN_TOKEN")
    return str(api.login("admin", ADMIN_PASSWORD)["access_token"])


@pytest.fixture
def lisa_token(api: Api) -> str:
    if GATEWAY:
        pytest.skip("a cluster has no demo user")
    return str(api.login("lisa", DEMO_PASSWORD)["access_token"])

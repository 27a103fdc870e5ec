"""Every SQL statement the functions run is prepared by PostgreSQL against the schema that the
SQLAlchemy Core tables create: a misspelt table or column, or a parameter of the wrong type, fails
here, not in a function. (The tables are declared once, in Core; the functions' SQL is text.)"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import ModuleType

import psycopg
import pytest

from functions.account import service as account_service
from functions.auth import service as auth_service
from functions.auth import throttle
from functions.goods import service as goods_service
from functions.order import create_order_saga
from functions.order import service as order_service
from saga.inbox import Inbox
from saga.outbox import Outbox
from saga.store import PostgresSagaStore
from saga.transaction import Database

pytestmark = pytest.mark.integration

_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s")
_SQL = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def statements() -> Iterator[tuple[str, str]]:
    modules: list[ModuleType] = [goods_service, account_service, order_service, create_order_saga, auth_service,
                                 throttle]
    for module in modules:
        for name, value in vars(module).items():
            if name.isupper() and isinstance(value, str) and _SQL.match(value):
                yield f"{module.__name__}.{name}", value
    for owner in (Inbox("goods.inbox"), Outbox("orders.outbox"), PostgresSagaStore("orders")):
        for name, value in vars(owner).items():
            if isinstance(value, str) and _SQL.match(value):
                yield f"{type(owner).__name__}.{name}", value


def numbered(sql: str) -> str:
    """psycopg's placeholders as PostgreSQL's ($1, $2; a named one keeps its number)."""
    names: dict[str, int] = {}
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match[1] is not None:
            if match[1] not in names:
                count += 1
                names[match[1]] = count
            return f"${names[match[1]]}"
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


@pytest.mark.parametrize(("name", "sql"), list(statements()), ids=[n for n, _ in statements()])
def test_the_statement_prepares_against_the_schema(database: Database, name: str, sql: str) -> None:
    with database.pool.connection() as connection:
        try:
            connection.execute(f"PREPARE checked AS {numbered(sql)}", prepare=False)
        except psycopg.Error as exc:
            pytest.fail(f"{name} does not prepare: {exc}")
        finally:
            if connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                connection.execute("DEALLOCATE ALL", prepare=False)


def test_the_statements_are_found() -> None:
    found = dict(statements())
    assert len(found) >= 30, sorted(found)
    assert "saga.inbox.Inbox.claim" not in found and "Inbox.claim" in found

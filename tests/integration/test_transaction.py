"""A step's transaction (`saga.transaction`) on real PostgreSQL: committed whole or not at all, and
its connection back in the pool clean whatever failed (the benchmark counts its round trips:
`postgres_round_trips`, two per step)."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.pq import TransactionStatus

from saga.transaction import Database

pytestmark = pytest.mark.integration

INSERT = ("INSERT INTO goods.reservations (saga_type, saga_id, goods_id, quantity, state) "
          "VALUES ('TestSaga', %s, 1, 1, 'RELEASED')")
COUNT = "SELECT count(*) FROM goods.reservations WHERE saga_id = ANY(%s)"


def count(database: Database, *ids: str) -> int:
    return int(database.autocommit(lambda tx: tx.query(COUNT, (list(ids),)).scalar()) or 0)


def idle(database: Database) -> bool:
    with database.pool.connection() as connection:
        return connection.info.transaction_status == TransactionStatus.IDLE


def test_queued_writes_commit_together(database: Database) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    database.run_sync(lambda tx: (tx.execute(INSERT, (first,)), tx.execute(INSERT, (second,))))
    assert count(database, first, second) == 2


def test_a_write_that_fails_at_commit_takes_the_others_with_it(database: Database) -> None:
    taken, other = str(uuid.uuid4()), str(uuid.uuid4())
    database.run_sync(lambda tx: tx.execute(INSERT, (taken,)))
    with pytest.raises(psycopg.errors.UniqueViolation):
        # Both queued; the duplicate key fails only when the block ends and the pipeline is synced.
        database.run_sync(lambda tx: (tx.execute(INSERT, (other,)), tx.execute(INSERT, (taken,))))
    assert count(database, other) == 0
    assert idle(database), "the connection went back to the pool rolled back"


def test_an_exception_after_queued_writes_commits_nothing(database: Database) -> None:
    written = str(uuid.uuid4())

    def fails(tx: object) -> None:
        tx.execute(INSERT, (written,))  # type: ignore[attr-defined]
        raise RuntimeError("the handler failed after queuing a write")

    with pytest.raises(RuntimeError):
        database.run_sync(fails)
    assert count(database, written) == 0
    assert idle(database)


def test_a_failed_read_fails_the_transaction_and_the_next_one_runs_clean(database: Database) -> None:
    with pytest.raises(psycopg.errors.DataError):
        database.run_sync(lambda tx: tx.query("SELECT %s::integer", ("not a number",)).one())
    fresh = str(uuid.uuid4())
    database.run_sync(lambda tx: tx.execute(INSERT, (fresh,)))
    assert count(database, fresh) == 1

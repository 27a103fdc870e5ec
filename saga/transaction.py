"""A step's transaction in two round trips to PostgreSQL, on psycopg 3 in pipeline mode.

`BEGIN` and every statement are queued, not sent one by one. Reads are queued first and their rows
fetched on first use: that fetch sends everything queued so far and waits once (round trip 1); the
writes and `COMMIT` then go together when the block ends (round trip 2). So a handler queues its
reads up front and decides afterwards (`saga.inbox.handle_once`). The connection is in autocommit
mode and the transaction is spelled out, because psycopg's own transaction block syncs the pipeline
before `BEGIN` (a round trip of its own).

SQL is written per statement, with the tables declared once in SQLAlchemy (`saga.tables`, each
service's schema module) for creating them: executing through SQLAlchemy cost 3.1 ms of CPU per
transaction against 0.7 ms here, and its import a tenth of a cold start (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import namedtuple_row
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]


class Rows:
    """The rows of a queued statement; fetched (with everything queued before) on first use."""

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        self._cursor = cursor

    def one(self) -> Any | None:
        return self._cursor.fetchone()

    def all(self) -> list[Any]:
        return self._cursor.fetchall()

    def scalar(self) -> Any | None:
        row = self._cursor.fetchone()
        return None if row is None else row[0]


class Tx:
    """The transaction a handler works in."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection
        self._after_commit: list[Callable[[], None]] = []

    def query(self, sql: str, params: Params = ()) -> Rows:
        """Queue a statement whose rows are wanted."""
        cursor = self._connection.cursor(row_factory=namedtuple_row)
        cursor.execute(sql, params)
        return Rows(cursor)

    def execute(self, sql: str, params: Params = ()) -> None:
        """Queue a statement whose result is not (an error in it fails the transaction at COMMIT)."""
        self._connection.execute(sql, params)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transaction has committed (never if it rolls back): what a handler
        counts (`saga.metrics`) must be what happened, and a transaction run again counts once."""
        self._after_commit.append(callback)

    def committed(self) -> None:
        for callback in self._after_commit:
            try:
                callback()
            except Exception:  # a count must never fail what committed
                log.warning("an after-commit callback failed", exc_info=True)
        self._after_commit.clear()


@contextmanager
def transaction(connection: psycopg.Connection[Any]) -> Iterator[Tx]:
    """One transaction on an autocommit connection: committed when the block ends, else rolled back."""
    tx = Tx(connection)
    try:
        with connection.pipeline():
            # Never prepared: nothing to gain, and PostgreSQL's statement statistics (which the
            # benchmark counts transactions with) miss utility statements run as prepared ones.
            connection.execute("BEGIN", prepare=False)
            yield tx
            connection.execute("COMMIT", prepare=False)
    except BaseException:
        # An error aborts the pipeline; once it is synced, the transaction is left failed or open.
        if not connection.closed and connection.info.transaction_status != TransactionStatus.IDLE:
            try:
                connection.execute("ROLLBACK", prepare=False)
            except psycopg.Error:
                log.warning("rollback failed; the pool discards the connection", exc_info=True)
        raise
    tx.committed()


class Database:
    """A function's connections to its database and the threads its transactions run on (off the
    event loop: blocking psycopg is cheaper per transaction than its asyncio flavour here).
    Nothing connects before the first transaction; no connection is checked before use: one that
    died fails its transaction, whose event is delivered again, and the pool replaces it."""

    def __init__(self, url: str, size: int) -> None:
        self.size = size
        # Opened here: a Database is made on a function's first request, never at import.
        self.pool = ConnectionPool(url, min_size=1, max_size=size, open=True, name="saga",
                                   kwargs={"autocommit": True, "prepare_threshold": 2})
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="db")

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as connection, transaction(connection) as tx:
            yield tx

    def autocommit(self, work: Callable[[Tx], T]) -> T:
        """`work(tx)` without BEGIN and COMMIT, for reads and single statements: what it queues runs
        as one implicit transaction, in one round trip. Blocking: call it through `call`."""
        with self.pool.connection() as connection:
            tx = Tx(connection)
            with connection.pipeline():
                result = work(tx)
            tx.committed()
            return result

    def run_sync(self, work: Callable[[Tx], T]) -> T:
        with self.transaction() as tx:
            return work(tx)

    async def run(self, work: Callable[[Tx], T]) -> T:
        """`work(tx)` in one transaction, on a database thread."""
        return await self.call(self.run_sync, work)

    async def call(self, blocking: Callable[..., T], *args: Any) -> T:
        """Any other blocking database work (several transactions, a sweep), on a database thread, in the
        caller's context (`contextvars`: the trace the events it creates are stamped with)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, blocking, *args)

    def close(self) -> None:
        self.pool.close()
        self._executor.shutdown(wait=False)

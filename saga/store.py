"""Saga instances and their append-only history in PostgreSQL (`saga.tables.saga_tables`).

`lock` takes the instance's row lock (SELECT ... FOR UPDATE) so two deliveries of the same reply
serialise, and every writer of an instance holds it: `update` writes the next version under that
lock. Deadlines are computed on PostgreSQL's clock, so every function agrees on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from saga.engine import HistoryEntry, SagaInstance
from saga.transaction import Tx

_COLUMNS = "saga_id, saga_type, step, compensating, finished, data, awaiting, version"
# Seconds from now, on PostgreSQL's clock (NULL: nothing awaited).
_DEADLINE = "now() + make_interval(secs => %(deadline_after)s::float8)"


class PostgresSagaStore:
    def __init__(self, schema: str) -> None:
        instances, self._history = f"{schema}.saga_instances", f"{schema}.saga_history"
        self._insert = (f"INSERT INTO {instances} ({_COLUMNS}, deadline) VALUES (%(saga_id)s, %(saga_type)s, "
                        "%(step)s, %(compensating)s, %(finished)s, %(data)s, %(awaiting)s, %(version)s, "
                        f"{_DEADLINE})")
        self._lock = f"SELECT {_COLUMNS} FROM {instances} WHERE saga_id = %s AND saga_type = %s FOR UPDATE"
        self._lock_overdue = (f"SELECT {_COLUMNS} FROM {instances} WHERE saga_id = %s AND saga_type = %s "
                              "AND NOT finished AND deadline < now() FOR UPDATE")
        self._update = (f"UPDATE {instances} SET step = %(step)s, compensating = %(compensating)s, "
                        "finished = %(finished)s, data = %(data)s, awaiting = %(awaiting)s, version = %(version)s, "
                        f"deadline = {_DEADLINE}, updated_at = now() WHERE saga_id = %(saga_id)s")
        self._overdue = (f"SELECT saga_id FROM {instances} WHERE NOT finished AND saga_type = %s "
                         "AND deadline < now() ORDER BY deadline LIMIT %s")
        self._describe = (f"SELECT {_COLUMNS}, deadline, created_at, updated_at FROM {instances} "
                          "WHERE saga_id = %s")
        self._history_of = f"SELECT at, step, name, event, detail FROM {self._history} WHERE saga_id = %s ORDER BY id"

    def insert(self, tx: Tx, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        tx.execute(self._insert, _row(instance))
        self.append(tx, instance.saga_id, history)

    def lock(self, tx: Tx, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        return _instance_of(tx.query(self._lock, (saga_id, saga_type)).one)

    def lock_overdue(self, tx: Tx, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        return _instance_of(tx.query(self._lock_overdue, (saga_id, saga_type)).one)

    def overdue(self, tx: Tx, saga_type: str, limit: int) -> list[str]:
        """Ids of unfinished sagas past their deadline, oldest deadline first."""
        return [row.saga_id for row in tx.query(self._overdue, (saga_type, limit)).all()]

    def update(self, tx: Tx, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        """Write `instance` (its version already incremented); the caller holds its lock."""
        tx.execute(self._update, _row(instance))
        self.append(tx, instance.saga_id, history)

    def append(self, tx: Tx, saga_id: str, history: Sequence[HistoryEntry]) -> None:
        if history:
            # One multi-row INSERT: one statement, whatever the number of entries.
            rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(history))
            values = [v for h in history for v in (saga_id, h.step, h.name, str(h.event), Jsonb(h.detail))]
            tx.execute(f"INSERT INTO {self._history} (saga_id, step, name, event, detail) VALUES {rows}", values)

    def describe(self, tx: Tx, saga_id: str) -> dict[str, Any] | None:
        """The instance and its ordered history, as served by GET /orders/{id}/saga (one round trip
        when `tx` pipelines)."""
        found, entries = tx.query(self._describe, (saga_id,)), tx.query(self._history_of, (saga_id,))
        row = found.one()
        if row is None:
            return None
        return {
            "sagaId": row.saga_id,
            "sagaType": row.saga_type,
            "currentStep": row.step,
            "compensating": row.compensating,
            "finished": row.finished,
            "version": row.version,
            "deadline": row.deadline.isoformat() if row.deadline is not None else None,
            "data": row.data,
            "createdAt": row.created_at.isoformat(),
            "updatedAt": row.updated_at.isoformat(),
            "history": [
                {"at": e.at.isoformat(), "step": e.step, "name": e.name, "event": e.event, **e.detail}
                for e in entries.all()
            ],
        }


def _instance_of(fetch: Callable[[], Any]) -> Callable[[], SagaInstance | None]:
    def instance() -> SagaInstance | None:
        row = fetch()
        if row is None:
            return None
        return SagaInstance(
            saga_type=row.saga_type, saga_id=row.saga_id, step=row.step, compensating=row.compensating,
            finished=row.finished, data=row.data, awaiting=row.awaiting, version=row.version,
        )

    return instance


def _row(instance: SagaInstance) -> dict[str, Any]:
    return {
        "saga_id": instance.saga_id,
        "saga_type": instance.saga_type,
        "step": instance.step,
        "compensating": instance.compensating,
        "finished": instance.finished,
        "data": Jsonb(instance.data),
        "awaiting": instance.awaiting,
        "version": instance.version,
        "deadline_after": instance.deadline_after,
    }

"""Saga instances and their append-only history in PostgreSQL (`saga.tables.saga_tables`).

`lock` takes the instance's row lock (SELECT ... FOR UPDATE) so two deliveries of the same reply
serialise, and every writer of an instance holds it: `update` writes the next version under that
lock. Deadlines are computed on PostgreSQL's clock, so every function agrees on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from psycopg.types.json import Jsonb

from saga import metrics, tracing
from saga.engine import HistoryEntry, SagaInstance, SagaState
from saga.transaction import Tx

_COLUMNS = ("saga_id, saga_type, step, compensating, finished, data, awaiting, version, attempt, parked_reason, "
            "definition_version, step_name, traceparent")
def state_sql(table: str = "") -> str:
    """SagaState.of in SQL, for filtering: over `table`'s columns (an alias, or none). The two change together."""
    c = f"{table}." if table else ""
    return (f"(CASE WHEN {c}parked_reason IS NOT NULL THEN 'PARKED' WHEN {c}finished AND {c}compensating "
            f"THEN 'COMPENSATED' WHEN {c}finished THEN 'COMPLETED' WHEN {c}compensating THEN 'COMPENSATING' "
            "ELSE 'RUNNING' END)")


_STATE = state_sql()
# How long since the saga's last write (when a reply comes: how long it was awaited) and since its start,
# on PostgreSQL's clock: what the engine records as a step's latency and a saga's duration.
_AGES = ("extract(epoch FROM now() - updated_at)::float8 AS waited, "
         "extract(epoch FROM now() - created_at)::float8 AS age")
# Seconds from now, on PostgreSQL's clock (NULL: nothing awaited).
_DEADLINE = "now() + make_interval(secs => %(deadline_after)s::float8)"


class PostgresSagaStore:
    def __init__(self, schema: str) -> None:
        instances, self._history = f"{schema}.saga_instances", f"{schema}.saga_history"
        self._insert = (f"INSERT INTO {instances} ({_COLUMNS}, deadline) VALUES (%(saga_id)s, %(saga_type)s, "
                        "%(step)s, %(compensating)s, %(finished)s, %(data)s, %(awaiting)s, %(version)s, %(attempt)s, "
                        f"%(parked_reason)s, %(definition_version)s, %(step_name)s, %(traceparent)s, {_DEADLINE})")
        self._lock = f"SELECT {_COLUMNS}, {_AGES} FROM {instances} WHERE saga_id = %s AND saga_type = %s FOR UPDATE"
        self._lock_overdue = (f"SELECT {_COLUMNS}, {_AGES}, extract(epoch FROM now() - deadline)::float8 AS overdue_by "
                              f"FROM {instances} WHERE saga_id = %s AND saga_type = %s "
                              "AND NOT finished AND parked_reason IS NULL AND deadline < now() FOR UPDATE")
        self._update = (f"UPDATE {instances} SET step = %(step)s, compensating = %(compensating)s, "
                        "finished = %(finished)s, data = %(data)s, awaiting = %(awaiting)s, version = %(version)s, "
                        "attempt = %(attempt)s, parked_reason = %(parked_reason)s, step_name = %(step_name)s, "
                        f"deadline = {_DEADLINE}, updated_at = now() "
                        "WHERE saga_id = %(saga_id)s AND saga_type = %(saga_type)s")
        # Parked sagas have no deadline: the sweep never sees them.
        self._overdue = (f"SELECT saga_id, traceparent FROM {instances} WHERE NOT finished AND saga_type = %s "
                         "AND deadline < now() ORDER BY deadline LIMIT %s")
        self._list = ("SELECT saga_id, saga_type, definition_version, step, step_name, attempt, parked_reason, "
                      "deadline, created_at, updated_at, traceparent, "
                      f"{_STATE} AS state, (NOT finished AND deadline < now()) IS TRUE AS overdue FROM {instances} "
                      f"WHERE (%(state)s::text IS NULL OR {_STATE} = %(state)s) "
                      "AND (%(saga_type)s::text IS NULL OR saga_type = %(saga_type)s) "
                      "AND (%(older_than)s::float8 IS NULL "
                      "OR created_at < now() - make_interval(secs => %(older_than)s)) "
                      "ORDER BY parked_reason IS NOT NULL DESC, (NOT finished AND deadline < now()) IS TRUE DESC, "
                      "finished, updated_at DESC LIMIT %(limit)s")
        self._describe = (f"SELECT {_COLUMNS}, deadline, created_at, updated_at FROM {instances} "
                          "WHERE saga_id = %s ORDER BY created_at, saga_type")
        self._history_of = (f"SELECT saga_type, at, step, name, event, detail FROM {self._history} "
                            "WHERE saga_id = %s ORDER BY id")

    def insert(self, tx: Tx, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        """A new saga, in the trace it starts in (`saga.tracing`: the request's or event's span)."""
        tx.execute(self._insert, {**_row(instance), "traceparent": tracing.current()})
        self.append(tx, instance.saga_type, instance.saga_id, history)

    def lock(self, tx: Tx, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        return _instance_of(tx.query(self._lock, (saga_id, saga_type)).one)

    def lock_overdue(self, tx: Tx, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        return _instance_of(tx.query(self._lock_overdue, (saga_id, saga_type)).one)

    def overdue(self, tx: Tx, saga_type: str, limit: int) -> list[tuple[str, str | None]]:
        """Unfinished sagas past their deadline, oldest deadline first: each one's id and trace context."""
        return [(row.saga_id, row.traceparent) for row in tx.query(self._overdue, (saga_type, limit)).all()]

    def update(self, tx: Tx, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        """Write `instance` (its version already incremented); the caller holds its lock."""
        tx.execute(self._update, _row(instance))
        self.append(tx, instance.saga_type, instance.saga_id, history)

    def append(self, tx: Tx, saga_type: str, saga_id: str, history: Sequence[HistoryEntry]) -> None:
        if history:
            # One multi-row INSERT: one statement, whatever the number of entries.
            rows = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(history))
            values = [v for h in history for v in (saga_type, saga_id, h.step, h.name, str(h.event), Jsonb(h.detail))]
            tx.execute(f"INSERT INTO {self._history} (saga_type, saga_id, step, name, event, detail) VALUES {rows}",
                       values)
            tx.after_commit(lambda: metrics.observe_history(saga_type, history))

    def list_sagas(self, tx: Tx, *, state: str | None = None, saga_type: str | None = None,
             older_than: float | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Sagas for an operator, filtered; those that need a person first (parked, then overdue), then
        the unfinished, then the most recently changed."""
        found = tx.query(self._list, {"state": state, "saga_type": saga_type, "older_than": older_than,
                                      "limit": limit})
        return [{
            "sagaId": row.saga_id, "sagaType": row.saga_type, "definitionVersion": row.definition_version,
            "state": row.state, "currentStep": row.step, "stepName": row.step_name,
            "attempt": row.attempt, "parkedReason": row.parked_reason, "overdue": row.overdue,
            "deadline": row.deadline.isoformat() if row.deadline is not None else None,
            "createdAt": row.created_at.isoformat(), "updatedAt": row.updated_at.isoformat(),
            "traceId": tracing.trace_id(row.traceparent),
        } for row in found.all()]

    def describe(self, tx: Tx, saga_id: str) -> list[dict[str, Any]]:
        """Every saga over this id (an order's create and cancel), oldest first, each with its ordered
        history, as served by GET /orders/{id}/saga (one round trip when `tx` pipelines)."""
        found, entries = tx.query(self._describe, (saga_id,)), tx.query(self._history_of, (saga_id,))
        rows = found.all()
        history: dict[str, list[dict[str, Any]]] = {}
        for e in entries.all():
            history.setdefault(e.saga_type, []).append(
                {"at": e.at.isoformat(), "step": e.step, "name": e.name, "event": e.event, **e.detail})
        return [{
            "sagaId": row.saga_id,
            "sagaType": row.saga_type,
            "definitionVersion": row.definition_version,
            "currentStep": row.step,
            "stepName": row.step_name,
            "compensating": row.compensating,
            "finished": row.finished,
            "state": str(SagaState.of(finished=row.finished, compensating=row.compensating,
                                      parked=row.parked_reason is not None)),
            "attempt": row.attempt,
            "parkedReason": row.parked_reason,
            "version": row.version,
            "deadline": row.deadline.isoformat() if row.deadline is not None else None,
            "data": row.data,
            "createdAt": row.created_at.isoformat(),
            "updatedAt": row.updated_at.isoformat(),
            "traceId": tracing.trace_id(row.traceparent),
            "history": history.get(row.saga_type, []),
        } for row in rows]


def _instance_of(fetch: Callable[[], Any]) -> Callable[[], SagaInstance | None]:
    def instance() -> SagaInstance | None:
        row = fetch()
        if row is None:
            return None
        return SagaInstance(
            saga_type=row.saga_type, saga_id=row.saga_id, step=row.step, compensating=row.compensating,
            finished=row.finished, data=row.data, awaiting=row.awaiting, version=row.version,
            attempt=row.attempt, parked_reason=row.parked_reason, overdue_by=getattr(row, "overdue_by", None),
            waited=row.waited, age=row.age,
            definition_version=row.definition_version, step_name=row.step_name,
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
        "attempt": instance.attempt,
        "parked_reason": instance.parked_reason,
        "definition_version": instance.definition_version,
        "step_name": instance.step_name,
        "deadline_after": instance.deadline_after,
    }

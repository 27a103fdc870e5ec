"""Saga instances and their append-only history in PostgreSQL.

`lock` takes the instance's row lock (SELECT ... FOR UPDATE) so two deliveries of the same reply
serialise; `update` also checks the version, so a writer that skipped the lock cannot overwrite a
newer state unnoticed. Deadlines are computed on PostgreSQL's clock, so every function agrees on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from saga.engine import HistoryEntry, SagaInstance
from saga.errors import ConcurrentUpdate


def saga_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    instances = sa.Table(
        "saga_instances",
        metadata,
        sa.Column("saga_id", sa.Text, primary_key=True),
        sa.Column("saga_type", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("compensating", sa.Boolean, nullable=False),
        sa.Column("finished", sa.Boolean, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("awaiting", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        # When the awaited reply is overdue (NULL: nothing awaited); read by the stuck-saga sweep.
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Unfinished sagas, for the stuck-saga sweep and the invariants checker.
    sa.Index(f"{instances.name}_deadlines", instances.c.deadline, postgresql_where=~instances.c.finished)
    history = sa.Table(
        "saga_history",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("saga_id", sa.Text, nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.clock_timestamp()),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False),
    )
    return instances, history


def upgrade_saga_tables(conn: sa.Connection, instances: sa.Table) -> None:
    """Columns added since a table was first created (create_all adds only missing tables)."""
    conn.execute(sa.text(f'ALTER TABLE "{instances.schema}"."{instances.name}" '
                         "ADD COLUMN IF NOT EXISTS deadline timestamptz"))


class PostgresSagaStore:
    def __init__(self, instances: sa.Table, history: sa.Table) -> None:
        self.instances = instances
        self.history = history

    def insert(self, tx: sa.Connection, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        tx.execute(sa.insert(self.instances).values(**_row(instance)))
        self.append(tx, instance.saga_id, history)

    def lock(self, tx: sa.Connection, saga_type: str, saga_id: str) -> SagaInstance | None:
        return self._lock(tx, saga_type, saga_id, overdue_only=False)

    def lock_overdue(self, tx: sa.Connection, saga_type: str, saga_id: str) -> SagaInstance | None:
        return self._lock(tx, saga_type, saga_id, overdue_only=True)

    def overdue(self, tx: sa.Connection, saga_type: str, limit: int) -> list[str]:
        """Ids of unfinished sagas past their deadline, oldest deadline first."""
        t = self.instances
        return list(tx.execute(
            sa.select(t.c.saga_id)
            .where(~t.c.finished, t.c.saga_type == saga_type, t.c.deadline < sa.func.now())
            .order_by(t.c.deadline)
            .limit(limit)
        ).scalars())

    def _lock(self, tx: sa.Connection, saga_type: str, saga_id: str, *, overdue_only: bool) -> SagaInstance | None:
        t = self.instances
        query = sa.select(t).where(t.c.saga_id == saga_id, t.c.saga_type == saga_type)
        if overdue_only:
            query = query.where(~t.c.finished, t.c.deadline < sa.func.now())
        row = tx.execute(query.with_for_update()).first()
        if row is None:
            return None
        return SagaInstance(
            saga_type=row.saga_type, saga_id=row.saga_id, step=row.step, compensating=row.compensating,
            finished=row.finished, data=row.data, awaiting=row.awaiting, version=row.version,
        )

    def update(self, tx: sa.Connection, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        t = self.instances
        values = _row(instance)
        del values["saga_id"], values["saga_type"]
        done = tx.execute(
            sa.update(t)
            .where(t.c.saga_id == instance.saga_id, t.c.version == instance.version - 1)
            .values(**values, updated_at=sa.func.now())
        )
        if done.rowcount != 1:
            raise ConcurrentUpdate(f"saga {instance.saga_id} changed underneath version {instance.version - 1}")
        self.append(tx, instance.saga_id, history)

    def append(self, tx: sa.Connection, saga_id: str, history: Sequence[HistoryEntry]) -> None:
        if history:
            # One multi-row INSERT, not executemany: one round trip instead of one per entry.
            tx.execute(sa.insert(self.history).values([
                {"saga_id": saga_id, "step": h.step, "name": h.name, "event": str(h.event), "detail": h.detail}
                for h in history
            ]))

    def describe(self, tx: sa.Connection, saga_id: str) -> dict[str, Any] | None:
        """The instance and its ordered history, as served by GET /orders/{id}/saga."""
        row = tx.execute(sa.select(self.instances).where(self.instances.c.saga_id == saga_id)).first()
        if row is None:
            return None
        h = self.history
        entries = tx.execute(sa.select(h).where(h.c.saga_id == saga_id).order_by(h.c.id)).all()
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
                for e in entries
            ],
        }


def _row(instance: SagaInstance) -> dict[str, Any]:
    deadline = None if instance.deadline_after is None else (
        sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, instance.deadline_after))
    return {
        "deadline": deadline,
        "saga_id": instance.saga_id,
        "saga_type": instance.saga_type,
        "step": instance.step,
        "compensating": instance.compensating,
        "finished": instance.finished,
        "data": instance.data,
        "awaiting": instance.awaiting,
        "version": instance.version,
    }

"""Transactional outbox: an event is stored in the same transaction as the change that causes it,
then relayed to the broker (K_SINK) and deleted only after the broker acknowledged it.

Publication is at-least-once: a crash after the broker's 2xx and before the delete re-sends the same
event (same id), which consumers deduplicate. Nothing is lost: a row leaves the table only on a 2xx.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import httpx
import sqlalchemy as sa
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from sqlalchemy.dialects.postgresql import JSONB, insert

from saga.messages import event_from_json, event_to_json

log = logging.getLogger(__name__)


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("event", JSONB, nullable=False),
    )


def add(conn: sa.Connection, table: sa.Table, event: CloudEvent) -> None:
    """Store `event` for publication; part of the caller's transaction."""
    conn.execute(insert(table).values(event_id=event["id"], event=event_to_json(event)).on_conflict_do_nothing())


class Relay:
    """Moves outbox rows to the broker ingress over HTTP (binary-mode CloudEvents)."""

    def __init__(self, engine: sa.Engine, table: sa.Table, sink_url: str, client: httpx.Client) -> None:
        self._engine = engine
        self._table = table
        self._sink_url = sink_url
        self._client = client

    def publish(self, event_ids: Sequence[str]) -> int:
        """Publish these rows now (right after the commit that wrote them)."""
        if not event_ids:
            return 0
        return self._drain(self._table.c.event_id.in_(list(event_ids)), limit=len(event_ids))

    def sweep(self, limit: int = 500) -> int:
        """Publish whatever is left over (called on a schedule); returns how many were published."""
        return self._drain(sa.true(), limit=limit)

    def _drain(self, where: sa.ColumnElement[bool], *, limit: int) -> int:
        t = self._table
        with self._engine.begin() as conn:
            # SKIP LOCKED: a concurrent sweep and an API request never publish the same row at once.
            rows = conn.execute(
                sa.select(t.c.event_id, t.c.event)
                .where(where)
                .order_by(t.c.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            sent = []
            for row in rows:
                if not self._send(event_from_json(row.event)):
                    # The broker is down or refusing: the rest would wait out the same timeout one by
                    # one (found by `make chaos`). They stay queued for the next sweep.
                    break
                sent.append(row.event_id)
            if sent:
                conn.execute(sa.delete(t).where(t.c.event_id.in_(sent)))
        return len(sent)

    def _send(self, event: CloudEvent) -> bool:
        headers, body = to_binary(event)
        try:
            response = self._client.post(self._sink_url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            log.warning("outbox: broker unreachable, event %s stays queued: %s", event["id"], exc)
            return False
        if response.is_success:
            return True
        log.warning("outbox: broker answered %s, event %s stays queued", response.status_code, event["id"])
        return False


def pending(conn: sa.Connection, table: sa.Table) -> Iterable[CloudEvent]:
    """The events still waiting (for tests and the chaos checker)."""
    for row in conn.execute(sa.select(table.c.event).order_by(table.c.created_at)):
        yield event_from_json(row.event)

"""Idempotent receipt: a consumer handles each event (source, id) once, and a redelivery gets the
reply the first handling produced.

The inbox row, the business change and the reply commit in one transaction. Claiming inserts the
row first, so a concurrent duplicate blocks on it and then sees the committed reply.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from cloudevents.http import CloudEvent
from sqlalchemy.dialects.postgresql import JSONB, insert

from saga.messages import event_from_json, event_to_json


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_source", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The reply this handling produced (structured CloudEvent JSON), or NULL for none.
        sa.Column("reply", JSONB, nullable=True),
    )


def handle_once(
    conn: sa.Connection,
    table: sa.Table,
    consumer: str,
    event: CloudEvent,
    handler: Callable[[sa.Connection, CloudEvent], CloudEvent | None],
) -> CloudEvent | None:
    """Run `handler` unless this consumer already handled `event`; either way return the reply."""
    claimed = conn.execute(
        insert(table)
        .values(consumer=consumer, event_source=event["source"], event_id=event["id"], event_type=event["type"])
        .on_conflict_do_nothing()
        .returning(table.c.event_id)
    ).first()
    key = (table.c.consumer == consumer) & (table.c.event_source == event["source"]) & (
        table.c.event_id == event["id"]
    )
    if claimed is None:
        stored = conn.execute(sa.select(table.c.reply).where(key)).scalar_one()
        return None if stored is None else event_from_json(stored)
    reply = handler(conn, event)
    if reply is not None:
        conn.execute(sa.update(table).where(key).values(reply=event_to_json(reply)))
    return reply

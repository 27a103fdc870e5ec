"""Transactional outbox: an event is stored in the same transaction as the change that causes it,
then published to the broker (K_SINK) and deleted only after the broker acknowledged it.

Publication is at-least-once: a crash after the broker's 2xx and before the delete re-sends the same
event (same id), which consumers deduplicate. Nothing is lost: a row leaves the table only on a 2xx,
or, refused by the broker for good (a malformed or oversized event), into the parked table with the
broker's answer, where it holds back nothing behind it.
The function that wrote an event publishes it right after its commit and deletes the row after its
answer has gone (`PublishedRows`: one statement for every row published while the last one ran, so a
request never waits on it, and rows published together cost one round trip); a sweep on a schedule
publishes what a crash or an unreachable broker left, taking only rows older than a few seconds so
it does not race the publisher of a fresh one (if it does, the event goes out twice, same id).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from saga import metrics, tracing
from saga.messages import event_from_json, event_to_json
from saga.transaction import Database, Tx

log = logging.getLogger(__name__)

SWEEP_AFTER_SECONDS = 5.0  # a row younger than this is its writer's to publish


class Outbox:
    """A service's outbox table (`saga.tables.outbox_table`) and its parked events
    (`saga.tables.parked_events_table`, the same name with `_parked`), by their qualified names."""

    def __init__(self, table: str) -> None:
        self.name = table
        self.insert = f"INSERT INTO {table} (event_id, event) VALUES (%s, %s) ON CONFLICT DO NOTHING"
        self.due = (f"SELECT event_id, event FROM {table} WHERE created_at < now() - make_interval(secs => %s) "
                    "ORDER BY created_at LIMIT %s")
        self.delete = f"DELETE FROM {table} WHERE event_id = ANY(%s)"
        self.all = f"SELECT event FROM {table} ORDER BY created_at"
        # Moved in one statement: the row leaves the outbox only as it lands in the parked table. An
        # event parked before (a re-sent compensation has the same id) keeps one entry, the latest.
        self.park = (f"WITH moved AS (DELETE FROM {table} WHERE event_id = %s RETURNING event_id, event) "
                     f"INSERT INTO {table}_parked (event_id, event, status, reason) "
                     "SELECT event_id, event, %s, %s FROM moved ON CONFLICT (event_id) DO UPDATE SET "
                     "event = EXCLUDED.event, status = EXCLUDED.status, reason = EXCLUDED.reason, parked_at = now()")
        self.parked = f"SELECT event_id, parked_at, status, reason, event FROM {table}_parked ORDER BY parked_at"
        self.backlog = (f"SELECT count(*) AS waiting, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 "
                        f"AS oldest FROM {table}")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """The broker refused an event for good (a 4xx it would answer again): it is parked, and must
    not hold back the events behind it."""

    event_id: str
    status: int
    reason: str


@dataclasses.dataclass
class Published:
    """What one `Publisher.publish` did: the ids acknowledged, in order, and the events refused."""

    sent: list[str] = dataclasses.field(default_factory=list)
    refused: list[Refusal] = dataclasses.field(default_factory=list)


def add(tx: Tx, outbox: Outbox, event: CloudEvent) -> None:
    """Store `event` for publication, in the current trace; part of the caller's transaction."""
    tx.execute(outbox.insert, (event["id"], Jsonb(event_to_json(tracing.stamp(event)))))


class Publisher(Protocol):
    """Posts events to the broker ingress (`saga.publisher.HttpPublisher`)."""

    async def publish(self, events: Sequence[CloudEvent]) -> Published:
        """Posts them in order; goes past an event refused for good, stops at a passing failure."""
        ...


class PublishedRows:
    """Deletes an outbox's published rows in the background, each batch in one statement: the ids
    that arrive while a delete runs go in the next. A delete that fails, or never runs because the
    process stopped, leaves rows the sweep publishes again (same ids, absorbed by the inboxes)."""

    def __init__(self, database: Database, outbox: Outbox) -> None:
        self.database = database
        self.outbox = outbox
        self._waiting: list[str] = []
        self._deleting: asyncio.Task[None] | None = None

    def add(self, event_ids: Sequence[str]) -> None:
        self._waiting.extend(event_ids)
        if self._waiting and (self._deleting is None or self._deleting.done()):
            self._deleting = asyncio.get_running_loop().create_task(self._delete_waiting())

    async def drained(self) -> None:
        """Once every id added so far is deleted (or its delete failed)."""
        while self._deleting is not None and not self._deleting.done():
            await asyncio.shield(self._deleting)

    async def _delete_waiting(self) -> None:
        while self._waiting:
            event_ids, self._waiting = self._waiting, []
            try:
                await self.database.call(_delete, self.database, self.outbox, event_ids)
            except Exception:
                log.warning("deleting %d published row(s) failed; the sweep will publish them again",
                            len(event_ids), exc_info=True)


async def publish_after_commit(published: PublishedRows, publisher: Publisher, events: Sequence[CloudEvent]) -> None:
    """Best effort; never raises: what is not published stays in the outbox for the sweep."""
    try:
        outcome = await publisher.publish(events)
        published.add(outcome.sent)
        _count(published.outbox, outcome)
        if outcome.refused:
            await published.database.call(_park, published.database, published.outbox, outcome.refused)
    except Exception:
        log.warning("publishing after commit failed; the sweep will retry", exc_info=True)


async def sweep(database: Database, outbox: Outbox, publisher: Publisher, *, limit: int = 500,
                older_than: float = SWEEP_AFTER_SECONDS) -> int:
    """Publish what its writers left in the outbox (rows older than `older_than` seconds), parking
    those the broker refuses for good; returns how many were published."""
    rows: list[Any] = await database.call(_due, database, outbox, limit, older_than)
    outcome = await publisher.publish([event_from_json(row.event) for row in rows])
    _count(outbox, outcome)
    if outcome.sent:
        await database.call(_delete, database, outbox, outcome.sent)
    if outcome.refused:
        await database.call(_park, database, outbox, outcome.refused)
    backlog = await database.call(_backlog, database, outbox)
    metrics.OUTBOX_BACKLOG.labels(outbox.name).set(backlog.waiting)
    metrics.OUTBOX_OLDEST_AGE.labels(outbox.name).set(backlog.oldest)
    return len(outcome.sent)


def _count(outbox: Outbox, outcome: Published) -> None:
    metrics.OUTBOX_PUBLISHED.labels(outbox.name).inc(len(outcome.sent))
    for refusal in outcome.refused:
        metrics.OUTBOX_REFUSED.labels(outbox.name, str(refusal.status)).inc()


def _backlog(database: Database, outbox: Outbox) -> Any:
    """What is left after a sweep: how many events wait, and how long the oldest has (the broker is away,
    or a writer died before publishing)."""
    return database.autocommit(lambda tx: tx.query(outbox.backlog).one())


def _due(database: Database, outbox: Outbox, limit: int, older_than: float) -> list[Any]:
    return database.autocommit(lambda tx: tx.query(outbox.due, (older_than, limit)).all())


def _delete(database: Database, outbox: Outbox, event_ids: list[str]) -> None:
    database.autocommit(lambda tx: tx.execute(outbox.delete, (event_ids,)))


def _park(database: Database, outbox: Outbox, refused: list[Refusal]) -> None:
    """Each refused row into the parked table, for an operator to read; nothing publishes it again."""
    with database.transaction() as tx:
        for refusal in refused:
            tx.execute(outbox.park, (refusal.event_id, refusal.status, refusal.reason))


def parked(tx: Tx, outbox: Outbox) -> list[Any]:
    """The parked events: event_id, parked_at, status, reason, event."""
    return tx.query(outbox.parked).all()


def pending(tx: Tx, outbox: Outbox) -> list[CloudEvent]:
    """The events still waiting (for tests and the chaos checker)."""
    return [event_from_json(row.event) for row in tx.query(outbox.all).all()]

"""Idempotent receipt: a consumer handles each event (source, id) once, and a redelivery gets the
reply the first handling produced.

The inbox row, the business change and the reply commit in one transaction. The claim is queued
first, so a concurrent duplicate blocks on its row and then sees the committed reply; the handler's
reads are queued behind it, and all of them travel in one round trip (`saga.transaction`). The
claim is one statement that says both whether the event is new and, when it is not, what it was
answered with: on a conflict it "updates" the row (nothing changes) to return its reply, and
`xmax = 0` tells a row it inserted from one it found.
"""

from __future__ import annotations

from collections.abc import Callable

from cloudevents.http import CloudEvent
from psycopg.types.json import Jsonb

from saga import metrics, tracing
from saga.messages import event_from_json, event_to_json
from saga.transaction import Tx

Decide = Callable[[], CloudEvent | None]
# A handler queues the reads it needs and returns the decision, which is called (at most once) only
# when the event is new: it may write, and returns the reply.
Handler = Callable[[Tx, CloudEvent], Decide]


class Inbox:
    """A service's inbox table (`saga.tables.inbox_table`), by its qualified name."""

    def __init__(self, table: str) -> None:
        self.claim = (f"INSERT INTO {table} AS i (consumer, event_source, event_id, event_type) "
                      "VALUES (%s, %s, %s, %s) ON CONFLICT (consumer, event_source, event_id) "
                      "DO UPDATE SET event_type = i.event_type RETURNING xmax = 0 AS new, reply")
        self.answer = f"UPDATE {table} SET reply = %s WHERE consumer = %s AND event_source = %s AND event_id = %s"


def handle_once(tx: Tx, inbox: Inbox, consumer: str, event: CloudEvent, handler: Handler) -> CloudEvent | None:
    """Run `handler` unless this consumer already handled `event`; either way return the reply."""
    key = (consumer, event["source"], event["id"])
    claimed = tx.query(inbox.claim, (*key, event["type"]))
    decide = handler(tx, event)
    claim = claimed.one()  # inserted or found: a row either way
    assert claim is not None
    if not claim.new:  # handled before: answer as then
        tx.after_commit(metrics.INBOX_DUPLICATES.labels(consumer).inc)
        return None if claim.reply is None else event_from_json(claim.reply)
    reply = decide()
    if reply is not None:
        tracing.stamp(reply)  # stored stamped: a redelivery answers the very same event
        tx.execute(inbox.answer, (Jsonb(event_to_json(reply)), *key))
    return reply

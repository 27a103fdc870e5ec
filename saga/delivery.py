"""Serving one delivered CloudEvent the way the Knative Kafka dispatcher expects.

Parse the event, handle it once (inbox) inside one database transaction, and answer:
202 with no body when there is nothing to say, 200 with a binary-mode CloudEvent when there is a
reply (the broker publishes it), 400 for an event that can never be processed (the dispatcher sends
it straight to the dead-letter sink; nothing was changed), 5xx for a passing fault (redelivered).
"""

from __future__ import annotations

import json
import logging

import psycopg
from starlette.requests import Request
from starlette.responses import Response

from saga import metrics
from saga.crashpoints import crash_point
from saga.errors import SagaError
from saga.eventing.binding import InvalidEvent, cloud_event, from_http, raw_event
from saga.inbox import Handler, Inbox, handle_once
from saga.transaction import Database

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
MAX_EVENT_BYTES = 1024 * 1024  # Kafka's default record limit: no event the broker carried is larger


async def serve(request: Request, *, database: Database, inbox: Inbox, consumer: str, handle: Handler) -> Response:
    """The body of an event-driven function (`functions_framework.aio.http`)."""
    response = await _answer(request, database=database, inbox=inbox, consumer=consumer, handle=handle)
    result = "handled" if response.status_code < 400 else "rejected" if response.status_code < 500 else "failed"
    metrics.EVENTS_HANDLED.labels(consumer, result).inc()
    return response


async def _answer(request: Request, *, database: Database, inbox: Inbox, consumer: str, handle: Handler) -> Response:
    if int(request.headers.get("content-length") or 0) > MAX_EVENT_BYTES:
        return problem(413, "Event too large", f"an event is at most {MAX_EVENT_BYTES} bytes (the broker's limit)")
    body = await request.body()
    if len(body) > MAX_EVENT_BYTES:
        return problem(413, "Event too large", f"an event is at most {MAX_EVENT_BYTES} bytes (the broker's limit)")
    try:
        # The bindings' own reader and writer: the SDK's cost a fifth of a participant's CPU.
        event = cloud_event(from_http(request.headers, body))
    except InvalidEvent as exc:
        return problem(400, "Not a CloudEvent", str(exc))
    try:
        reply = await database.run(lambda tx: handle_once(tx, inbox, consumer, event, handle))
    except SagaError as exc:
        if exc.retryable or exc.status >= 500:
            log.warning("%s: event %s failed, will be redelivered: %s", consumer, event["id"], exc)
        else:
            log.error("%s: event %s rejected: %s", consumer, event["id"], exc)
        return problem(exc.status, type(exc).__name__, str(exc))
    except psycopg.errors.DataError as exc:
        # A value PostgreSQL refuses (out of range, NUL in text): no redelivery can change that.
        log.error("%s: event %s rejected by the database: %s", consumer, event["id"], exc)
        return problem(400, "InvalidMessage", "a value in the event is out of range or malformed")
    except Exception:
        log.exception("%s: event %s failed", consumer, event["id"])
        return problem(500, "Internal error", "the event could not be handled; it will be redelivered")
    crash_point(f"{consumer}.after-commit")  # committed, but the dispatcher never hears back
    if reply is None:
        return Response(status_code=202)
    headers, data = raw_event(reply).http()
    return Response(data, status_code=200, headers=headers)


def problem(status: int, title: str, detail: str) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return Response(json.dumps(body), status_code=status, media_type=PROBLEM)

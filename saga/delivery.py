"""Serving one delivered CloudEvent the way the Knative Kafka dispatcher expects.

Parse the event, handle it once (inbox) inside one database transaction, and answer:
202 with no body when there is nothing to say, 200 with a binary-mode CloudEvent when there is a
reply (the broker publishes it), 400 for an event that can never be processed (the dispatcher sends
it straight to the dead-letter sink; nothing was changed), 5xx for a passing fault (redelivered).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http

from saga.crashpoints import crash_point
from saga.errors import SagaError
from saga.inbox import handle_once

log = logging.getLogger(__name__)

Handler = Callable[[sa.Connection, CloudEvent], CloudEvent | None]
ResponseTuple = tuple[Any, int, dict[str, str]]

PROBLEM = "application/problem+json"
MAX_EVENT_BYTES = 1024 * 1024  # Kafka's default record limit: no event the broker carried is larger


def serve(request: Any, *, engine: sa.Engine, inbox: sa.Table, consumer: str, handle: Handler) -> ResponseTuple:
    """The body of an event-driven http function; `request` is the Flask request."""
    if (request.content_length or 0) > MAX_EVENT_BYTES:
        return problem(413, "Event too large", f"an event is at most {MAX_EVENT_BYTES} bytes (the broker's limit)")
    try:
        event = from_http(dict(request.headers), request.get_data())
    except CloudEventError as exc:
        return problem(400, "Not a CloudEvent", str(exc))
    try:
        with engine.begin() as tx:
            reply = handle_once(tx, inbox, consumer, event, handle)
    except SagaError as exc:
        if exc.retryable or exc.status >= 500:
            log.warning("%s: event %s failed, will be redelivered: %s", consumer, event["id"], exc)
        else:
            log.error("%s: event %s rejected: %s", consumer, event["id"], exc)
        return problem(exc.status, type(exc).__name__, str(exc))
    except sa.exc.DataError as exc:
        # A value PostgreSQL refuses (out of range, NUL in text): no redelivery can change that.
        log.error("%s: event %s rejected by the database: %s", consumer, event["id"], exc.orig)
        return problem(400, "InvalidMessage", "a value in the event is out of range or malformed")
    except Exception:
        log.exception("%s: event %s failed", consumer, event["id"])
        return problem(500, "Internal error", "the event could not be handled; it will be redelivered")
    crash_point(f"{consumer}.after-commit")  # committed, but the dispatcher never hears back
    if reply is None:
        return "", 202, {}
    headers, body = to_binary(reply)
    return body, 200, dict(headers)


def problem(status: int, title: str, detail: str) -> ResponseTuple:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return json.dumps(body), status, {"Content-Type": PROBLEM}

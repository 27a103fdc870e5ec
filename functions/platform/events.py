"""The emit side of the outbox for the functions that write events: publish right after commit,
and the PingSource sweep that publishes what a crash or an unreachable broker left behind."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence

from cloudevents.http import CloudEvent
from starlette.requests import Request
from starlette.responses import Response

from functions.platform.config import settings
from functions.platform.database import database
from saga import outbox as outbox_
from saga.outbox import Outbox, PublishedRows
from saga.publisher import HttpPublisher

log = logging.getLogger(__name__)


@functools.cache
def publisher() -> HttpPublisher:
    return HttpPublisher(settings().k_sink)


@functools.cache
def published_rows(outbox: Outbox) -> PublishedRows:
    return PublishedRows(database(settings().database_url), outbox)


async def publish_after_commit(outbox: Outbox, events: Sequence[CloudEvent]) -> None:
    """Best effort; never raises: what is not published stays in the outbox for the sweep. The
    published rows are deleted after the caller's answer (`saga.outbox.PublishedRows`)."""
    if not settings().k_sink:
        log.warning("K_SINK is not set: %d event(s) stay in the outbox", len(events))
        return
    await outbox_.publish_after_commit(published_rows(outbox), publisher(), events)


def sweep_target(outbox: Outbox) -> Callable[[Request], Awaitable[Response]]:
    """The body of the PingSource-triggered function. Answers 202 with no body: a 200 with a body
    that is not a CloudEvent counts as a failed delivery for the Kafka dispatcher."""

    async def outbox_relay(request: Request) -> Response:
        if settings().k_sink:
            published = await outbox_.sweep(database(settings().database_url), outbox, publisher())
            if published:
                log.info("outbox sweep published %d event(s)", published)
        else:
            log.warning("K_SINK is not set: the outbox sweep cannot publish")
        return Response(status_code=202)

    return outbox_relay

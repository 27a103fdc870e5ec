"""The emit side of the outbox for HTTP functions: publish right after commit, and the PingSource
sweep that publishes what a crash or an unreachable broker left behind."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import sqlalchemy as sa

from functions.platform.config import settings
from saga.outbox import Relay

log = logging.getLogger(__name__)


@functools.cache
def _client() -> httpx.Client:
    # One keep-alive client per process; short timeouts: a slow broker must not hold a request.
    return httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0))


@functools.cache
def relay_for(engine: sa.Engine, table: sa.Table) -> Relay:
    return Relay(engine, table, settings().k_sink, _client())


def publish_after_commit(relay: Relay, event_ids: Sequence[str]) -> None:
    """Best effort; never raises: what is not published stays in the outbox for the sweep."""
    if not settings().k_sink:
        log.warning("K_SINK is not set: %d event(s) stay in the outbox", len(event_ids))
        return
    try:
        relay.publish(event_ids)
    except Exception:
        log.warning("publishing after commit failed; the sweep will retry", exc_info=True)


def sweep_target(engine_factory: Callable[[], sa.Engine], table: sa.Table) -> Callable[[Any], Any]:
    """The body of the PingSource-triggered function. Answers 202 with no body: a 200 with a body
    that is not a CloudEvent counts as a failed delivery for the Kafka dispatcher."""

    def outbox_relay(request: Any) -> Any:
        if settings().k_sink:
            published = relay_for(engine_factory(), table).sweep()
            if published:
                log.info("outbox sweep published %d event(s)", published)
        else:
            log.warning("K_SINK is not set: the outbox sweep cannot publish")
        return "", 202

    return outbox_relay

"""The outbox's way to the broker: events posted to the broker ingress (K_SINK) in binary mode."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from cloudevents.http import CloudEvent

from saga.eventing.binding import raw_event

log = logging.getLogger(__name__)


class HttpPublisher:
    """Posts events to the broker ingress in binary mode, over one keep-alive session per process."""

    def __init__(self, sink_url: str) -> None:
        self.sink_url = sink_url
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Short timeouts: a slow broker must not hold the request that wrote the event.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0, connect=2.0))
        return self._session

    async def publish(self, events: Sequence[CloudEvent]) -> list[str]:
        """The ids the broker acknowledged, in order; stops at the first one it refuses or cannot
        take (the rest would wait out the same timeout one by one, found by `make chaos`)."""
        sent = []
        for event in events:
            headers, body = raw_event(event).http()
            try:
                async with self._client().post(self.sink_url, headers=headers, data=body) as answer:
                    await answer.read()
                    if answer.status >= 300:
                        log.warning("outbox: broker answered %s, event %s stays queued", answer.status, event["id"])
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("outbox: broker unreachable, event %s stays queued: %s", event["id"], exc)
                break
            sent.append(event["id"])
        return sent

"""The outbox's way to the broker: events posted to the broker ingress (K_SINK) in binary mode."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import aiohttp
from cloudevents.http import CloudEvent

from saga.eventing.binding import raw_event
from saga.outbox import Published, Refusal

log = logging.getLogger(__name__)

# Answers about the event itself (malformed, too large, a media type or content it does not take):
# the same event would be refused again, so it is parked. Any other failure (5xx, 429, 404 before
# the broker is ready, 401/403 from a misconfigured mesh) says nothing against the event: it waits.
REFUSED_FOR_GOOD = frozenset({400, 413, 415, 422})
REASON_LIMIT = 1024  # of the broker's answer, kept with a parked event


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

    async def publish(self, events: Sequence[CloudEvent]) -> Published:
        """Post each event in turn. A refusal of the event itself (REFUSED_FOR_GOOD) is reported and the
        next event goes on; any other failure stops the batch, since the rest would wait out the same
        fault one by one (found by `make chaos`)."""
        published = Published()
        for event in events:
            headers, body = raw_event(event).http()
            try:
                async with self._client().post(self.sink_url, headers=headers, data=body) as answer:
                    text = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("outbox: broker unreachable, event %s stays queued: %s", event["id"], exc)
                break
            if status < 300:
                published.sent.append(event["id"])
            elif status in REFUSED_FOR_GOOD:
                reason = text[:REASON_LIMIT].decode("utf-8", "replace")
                log.error("outbox: broker refused event %s (%s) for good: %s", event["id"], status, reason)
                published.refused.append(Refusal(event["id"], status, reason))
            else:
                log.warning("outbox: broker answered %s, event %s stays queued", status, event["id"])
                break
        return published

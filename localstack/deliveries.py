"""One event delivered to a Trigger's subscriber by Knative's rules (`saga.eventing.dispatch`: binary
mode, `Prefer: reply`, retries with backoff, a 2xx body that is not a CloudEvent is a failure), over
aiohttp, for events as bytes (`saga.eventing.binding`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from saga.eventing.binding import InvalidEvent, RawEvent, from_http
from saga.eventing.dispatch import backoff, retryable
from saga.eventing.topology import Trigger

log = logging.getLogger("dispatcher")


@dataclass(frozen=True)
class Outcome:
    status: int  # the last HTTP status; 0 when the subscriber could not be reached
    answer: bytes = b""
    reply: RawEvent | None = None
    failed: bool = False  # the retries are spent, or the answer can never be delivered: a dead letter


class Deliverer:
    """Knative's delivery rules (`saga.eventing.dispatch`) over aiohttp, for events as bytes."""

    def __init__(self, trigger: Trigger, session: aiohttp.ClientSession) -> None:
        self.trigger = trigger
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=trigger.delivery.timeout)

    async def deliver(self, event: RawEvent) -> Outcome:
        trigger = self.trigger
        headers, body = event.http()
        headers["Prefer"] = "reply"
        code, answer = 0, b""
        for attempt in range(trigger.delivery.retry + 1):
            if attempt:
                await asyncio.sleep(backoff(trigger, attempt))
            try:
                async with self.session.post(trigger.url, data=body, headers=headers, timeout=self.timeout) as response:
                    code, answer = response.status, await response.read()
                    answered = response.headers
            except (aiohttp.ClientError, TimeoutError) as exc:
                code, answer = 0, str(exc).encode()
                continue
            if 200 <= code < 300:
                if not answer:
                    return Outcome(code)
                try:
                    return Outcome(code, reply=from_http(answered, answer))
                except InvalidEvent:
                    break  # a 2xx body that is not a CloudEvent is a failed delivery, not retried
            if not retryable(code):
                break
        log.error("%s: event %s (%s) failed with status %s", trigger.name, event["id"], event["type"], code)
        return Outcome(code, answer, failed=True)

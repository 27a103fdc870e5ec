"""Knative's delivery rules for one Trigger, written once for the local dispatcher and for replay.

Binary-mode POST with `Prefer: reply`; retry on 5xx, 404, 408, 409, 429 and network errors with the
Trigger's backoff; any other 4xx, or a 2xx body that is not a CloudEvent, ends the attempts and the
event goes to the dead-letter sink with `knativeerrordest`, `knativeerrorcode` and
`knativeerrordata` (base64 of the answer, at most 1 KiB); a CloudEvent in a 2xx answer is the reply.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http

from saga.eventing.topology import Trigger

log = logging.getLogger(__name__)

RETRYABLE = frozenset({404, 408, 409, 429})
ERROR_DATA_LIMIT = 1024
ERROR_EXTENSIONS = ("knativeerrordest", "knativeerrorcode", "knativeerrordata")


class Attributes(Protocol):
    def get(self, name: str, default: Any = None) -> Any: ...


def matches(event: Attributes, wanted: dict[str, str]) -> bool:
    # Exact match on attributes and extensions; an empty value matches anything (Knative's rule).
    return all(value == "" or str(event.get(name, "")) == value for name, value in wanted.items())


def retryable(status: int) -> bool:
    """Whether a failed attempt is tried again: no answer (0), 5xx, 404, 408, 409, 429."""
    return status == 0 or status >= 500 or status in RETRYABLE


def backoff(trigger: Trigger, attempt: int) -> float:
    """Delay before retry `attempt` (1-based): linear delay x n, exponential delay x 2^n."""
    delivery = trigger.delivery
    if delivery.backoff_policy == "linear":
        return delivery.backoff_delay * attempt
    return delivery.backoff_delay * (2**attempt)


@dataclass(frozen=True)
class Outcome:
    status: int  # the last HTTP status; 0 when the subscriber could not be reached
    reply: CloudEvent | None = None
    dead_letter: CloudEvent | None = None

    @property
    def delivered(self) -> bool:
        return self.dead_letter is None and 200 <= self.status < 300


class Deliverer:
    def __init__(self, trigger: Trigger, client: httpx.Client, sleep: Callable[[float], None] = time.sleep) -> None:
        self.trigger = trigger
        self.client = client
        self.sleep = sleep

    def deliver(self, event: CloudEvent) -> Outcome:
        trigger = self.trigger
        headers, body = to_binary(event)
        headers = {**headers, "Prefer": "reply"}
        code, answer = 0, b""
        for attempt in range(trigger.delivery.retry + 1):
            if attempt:
                self.sleep(backoff(trigger, attempt))
            try:
                response = self.client.post(trigger.url, headers=headers, content=body,
                                            timeout=trigger.delivery.timeout)
            except httpx.HTTPError as exc:
                code, answer = 0, str(exc).encode()
                continue
            code, answer = response.status_code, response.content
            if 200 <= code < 300:
                if not answer:
                    return Outcome(code)
                try:
                    return Outcome(code, reply=from_http(dict(response.headers), answer))
                except CloudEventError:
                    break  # a 2xx body that is not a CloudEvent is a failed delivery
            if not retryable(code):
                break
        log.error("%s: event %s (%s) failed with status %s", trigger.name, event["id"], event["type"], code)
        return Outcome(code, dead_letter=self._parked(event, code, answer))

    def _parked(self, event: CloudEvent, code: int, answer: bytes) -> CloudEvent:
        return CloudEvent(
            {
                **without_error_extensions(event).get_attributes(),
                "knativeerrordest": self.trigger.url,
                "knativeerrorcode": str(code),
                "knativeerrordata": base64.b64encode(answer[:ERROR_DATA_LIMIT]).decode(),
            },
            event.get_data(),
        )


def without_error_extensions(event: CloudEvent) -> CloudEvent:
    """The event as it was before it was parked: what a redrive delivers again."""
    attributes = {k: v for k, v in event.get_attributes().items() if k not in ERROR_EXTENSIONS}
    return CloudEvent(attributes, event.get_data())

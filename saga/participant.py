"""A saga participant's command handler, written once: check and decode the command, run the
business action, and wrap its Reply (a business outcome, never an exception) as the reply event.
Idempotency comes from `saga.delivery.serve` (the inbox): a redelivered command gets the stored reply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from cloudevents.http import CloudEvent

from saga.errors import InvalidMessage
from saga.messages import SAGA_ID, SAGA_STEP, SAGA_TYPE, Command, Reply, from_data, reply_event, require_extension

C = TypeVar("C", bound=Command)

Action = Callable[[sa.Connection, str, C], Reply]


def command_handler(
    command_type: type[C], action: Action[C], *, source: str
) -> Callable[[sa.Connection, CloudEvent], CloudEvent]:
    """Adapt `action(tx, saga_id, command) -> Reply` into an event handler for `saga.delivery.serve`."""

    def handle(tx: sa.Connection, event: CloudEvent) -> CloudEvent:
        if event["type"] != command_type.TYPE:
            raise InvalidMessage(f"expected {command_type.TYPE}, got {event['type']}")
        saga_id = require_extension(event, SAGA_ID)
        require_extension(event, SAGA_TYPE)
        require_extension(event, SAGA_STEP)
        command = from_data(command_type, event.get_data())
        return reply_event(action(tx, saga_id, command), command=event, source=source)

    return handle

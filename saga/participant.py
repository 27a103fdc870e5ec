"""A saga participant's command handler, written once: check and decode the command, run the
business action, and wrap its Reply (a business outcome, never an exception) as the reply event.
Idempotency comes from `saga.delivery.serve` (the inbox): a redelivered command gets the stored reply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TypeVar

from cloudevents.http import CloudEvent

from saga.errors import InvalidMessage
from saga.inbox import Decide
from saga.messages import SAGA_ID, SAGA_STEP, SAGA_TYPE, Command, Reply, from_data, reply_event, require_extension
from saga.transaction import Tx

C = TypeVar("C", bound=Command)


@dataclasses.dataclass(frozen=True)
class SagaRef:
    """The saga a command comes from, by type and id: what a participant keys what it holds by (an
    order's create and cancel sagas share the order's id)."""

    type: str
    id: str


# An action queues the reads it needs and returns the decision, which may write and returns the Reply.
Action = Callable[[Tx, SagaRef, C], Callable[[], Reply]]


def command_handler(command_type: type[C], action: Action[C]) -> Callable[[Tx, CloudEvent], Decide]:
    """Adapt `action(tx, saga, command)` into an inbox handler (`saga.inbox.handle_once`). Its
    replies carry the command's HANDLER as their source, the one the saga checks."""

    def handle(tx: Tx, event: CloudEvent) -> Decide:
        if event["type"] != command_type.TYPE:
            raise InvalidMessage(f"expected {command_type.TYPE}, got {event['type']}")
        saga = SagaRef(require_extension(event, SAGA_TYPE), require_extension(event, SAGA_ID))
        require_extension(event, SAGA_STEP)
        decide = action(tx, saga, from_data(command_type, event.get_data()))
        return lambda: reply_event(decide(), command=event, source=command_type.HANDLER)

    return handle

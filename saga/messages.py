"""Commands, replies and domain events, and their one mapping to and from CloudEvents 1.0.

Message classes are frozen, keyword-only dataclasses. Money fields are `Decimal` and travel as
strings, never floats. Every event id is stable: derived with uuid5 from what caused it, so a
re-executed transition or a redelivered command produces byte-identical events that consumers
deduplicate on (source, id).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import typing
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

from cloudevents.http import CloudEvent

from saga.errors import InvalidMessage

# CloudEvent types. Commands name the participant action; all saga replies share one type so one
# Trigger (on the type) routes every reply of the order's sagas to their step handler, which picks the
# saga by `sagatype`.
REPLY_TYPE = "io.knativesaga.saga.reply"

# Extension attributes (CloudEvents: lowercase letters and digits only).
SAGA_ID = "sagaid"
SAGA_TYPE = "sagatype"
SAGA_STEP = "sagastep"
PARTITION_KEY = "partitionkey"  # Kafka record key in the Knative Kafka broker: one saga, one partition
CAUSATION_ID = "causationid"  # on a reply: the id of the command it answers
REPLY_KIND = "replytype"  # on a reply: GoodsReserved, GoodsStockLimit, ...
REPLY_OUTCOME = "replyoutcome"  # on a reply: SUCCESS or FAILURE

JSON = "application/json"
_NAMESPACE = uuid.UUID("6f2b7c4e-3f1a-5d0e-9a53-0c1d2e3f4a5b")


class Outcome(enum.StrEnum):
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Command:
    """A request to a saga participant. Subclasses set TYPE, the CloudEvent type; HANDLER, the source
    the participant that handles it signs its replies with; and REPLIES, the replies it may send.
    A saga applies a reply only from that source and of one of those kinds (`saga.engine`)."""

    TYPE: ClassVar[str]
    HANDLER: ClassVar[str]
    REPLIES: ClassVar[tuple[type[Reply], ...]]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reply:
    """A participant's answer. The class name is the reply type; OUTCOME says success or failure."""

    OUTCOME: ClassVar[Outcome] = Outcome.SUCCESS


M = TypeVar("M")


def stable_id(*parts: object) -> str:
    """A deterministic event id: the same cause always yields the same id."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


def to_data(message: object) -> dict[str, Any]:
    """Dataclass -> JSON-ready dict; Decimal as a string so money is never a float."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(message):  # type: ignore[arg-type]
        value = getattr(message, field.name)
        out[field.name] = str(value) if isinstance(value, Decimal) else value
    return out


def from_data(cls: type[M], data: Mapping[str, Any] | None) -> M:
    """Dict -> dataclass, checking presence and types; raises InvalidMessage naming the field."""
    if not isinstance(data, Mapping):
        raise InvalidMessage(f"{cls.__name__}: event data must be a JSON object")
    hints = _hints(cls)  # type: ignore[arg-type]  # classes are hashable; mypy's type[M] is not said to be
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name not in data:
            if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                continue
            raise InvalidMessage(f"{cls.__name__}: missing field {field.name!r}")
        values[field.name] = _coerce(cls.__name__, field.name, hints[field.name], data[field.name])
    return cls(**values)


@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    """A message class's field types, resolved once (they are strings under postponed annotations,
    and resolving them on every message was a measurable part of a handler's CPU)."""
    return typing.get_type_hints(cls)


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    if args and type(None) in args:  # Optional[X]
        hint = next(a for a in args if a is not type(None))
    try:
        if hint is Decimal:
            if isinstance(value, bool) or not isinstance(value, str | int):
                raise TypeError
            number = Decimal(str(value))
            if not number.is_finite():  # NaN and Infinity are no amount of money
                raise TypeError
            return number
        if hint is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
            return value
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
    except (TypeError, ArithmeticError) as exc:
        raise InvalidMessage(f"{owner}: field {name!r} has the wrong type") from exc
    return value


def command_event(
    command: Command, *, event_id: str, source: str, saga_type: str, saga_id: str, step: int
) -> CloudEvent:
    """A command as a CloudEvent, keyed by the saga id so a saga's events stay in one partition."""
    return CloudEvent(
        {
            "type": command.TYPE,
            "source": source,
            "id": event_id,
            "datacontenttype": JSON,
            SAGA_ID: saga_id,
            SAGA_TYPE: saga_type,
            SAGA_STEP: str(step),
            PARTITION_KEY: saga_id,
        },
        to_data(command),
    )


def reply_event(reply: Reply, *, command: CloudEvent, source: str) -> CloudEvent:
    """The reply to `command`; its id derives from the command id (a redelivery yields the same reply)."""
    return CloudEvent(
        {
            "type": REPLY_TYPE,
            "source": source,
            "id": stable_id("reply", command["id"]),
            "datacontenttype": JSON,
            SAGA_ID: command[SAGA_ID],
            SAGA_TYPE: command[SAGA_TYPE],
            SAGA_STEP: command[SAGA_STEP],
            PARTITION_KEY: command[SAGA_ID],
            CAUSATION_ID: command["id"],
            REPLY_KIND: type(reply).__name__,
            REPLY_OUTCOME: str(reply.OUTCOME),
        },
        to_data(reply),
    )


def domain_event(event_type: str, *, event_id: str, source: str, key: str, data: Mapping[str, Any]) -> CloudEvent:
    """A fact that happened (e.g. a user registered), keyed by the entity it concerns."""
    return CloudEvent(
        {"type": event_type, "source": source, "id": event_id, "datacontenttype": JSON, PARTITION_KEY: key},
        dict(data),
    )


def require_extension(event: CloudEvent, name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"event {event['id']!r} lacks the {name!r} extension")
    return value


def event_to_json(event: CloudEvent) -> dict[str, Any]:
    """Structured-mode JSON of an event, for storing it (outbox, inbox replies)."""
    return {**event.get_attributes(), "data": event.get_data()}


def event_from_json(stored: Mapping[str, Any] | str) -> CloudEvent:
    doc = json.loads(stored) if isinstance(stored, str) else dict(stored)
    data = doc.pop("data", None)
    return CloudEvent(doc, data)

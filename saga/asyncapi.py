"""The AsyncAPI 3.0.0 document of every event (`saga docs` writes it to docs/asyncapi.yaml), derived from
the code: the commands every version of every saga sends, each with the replies its class declares, and
the other events a service names (`EventDoc`). A message's headers are the CloudEvent attributes that
`saga.messages` sets, read off events it makes; its payload is its class's JSON Schema (pydantic)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pydantic import TypeAdapter

from saga.dsl import ParticipantStep
from saga.engine import SagaEngine
from saga.messages import (
    CAUSATION_ID,
    JSON,
    PARTITION_KEY,
    REPLY_KIND,
    REPLY_OUTCOME,
    REPLY_TYPE,
    SAGA_ID,
    SAGA_STEP,
    SAGA_TYPE,
    Command,
    Reply,
    command_event,
    domain_event,
    reply_event,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EventDoc:
    """An event other than the sagas' commands and replies (those come from the definitions)."""

    name: str  # the message's name in the document
    event_type: str  # its CloudEvent type
    source: str | None  # its CloudEvent source; None: it varies
    payload: type[Any] | None  # the dataclass its data decodes to; None: the data is not read
    summary: str
    sender: str
    receivers: tuple[str, ...]
    # A Knative source's event (PingSource): posted straight to its sink, not through the broker, with
    # only the attributes a source sets; the system receives it. Otherwise the system publishes it with
    # `saga.messages.domain_event`.
    knative_source: bool = False


BROKER = "broker"
SOURCES = "knativeSources"
ATTRIBUTES_SCHEMA = "CloudEventAttributes"
# What each attribute means. `traceparent` and `tracestate` (W3C Trace Context, the CloudEvents distributed
# tracing extension) may be on any event; a message requires only what the code always sets.
ATTRIBUTES = {
    "specversion": "CloudEvents version",
    "id": "stable (uuid5 of the cause): consumers deduplicate on (source, id)",
    "source": "who sent it; a reply's must be the handler of the command it answers",
    "type": "the CloudEvent type",
    "time": "when the event was made",
    "datacontenttype": "the data's media type (the `content-type` header in binary mode)",
    PARTITION_KEY: "the Kafka record key: the saga id (commands, replies) or the entity id, so one saga's events "
                   "share a partition",
    SAGA_ID: "the saga instance id (= the order id)",
    SAGA_TYPE: "the saga type; the step handler picks the saga by it, some Triggers filter on it",
    SAGA_STEP: "index of the saga step the command belongs to",
    CAUSATION_ID: "the id of the command answered; the saga applies only a reply to the command it awaits",
    REPLY_KIND: "which reply it is (its message name)",
    REPLY_OUTCOME: "SUCCESS or FAILURE",
    "traceparent": "W3C Trace Context: the saga's trace and the sending span (optional)",
    "tracestate": "W3C Trace Context vendor state (optional)",
}
_FIXED: dict[str, dict[str, Any]] = {"specversion": {"const": "1.0"}, "datacontenttype": {"const": JSON},
                                     "time": {"format": "date-time"}}
# The attributes a Knative source (PingSource) sets.
_SOURCE_ATTRIBUTES = ("datacontenttype", "id", "source", "specversion", "time", "type")


@dataclasses.dataclass(frozen=True, kw_only=True)
class _AttributeProbe(Command):
    """Only built to read which attributes `command_event` sets."""

    TYPE: ClassVar[str] = "probe"
    HANDLER: ClassVar[str] = "probe"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = ()


def attributes_set_by_code() -> dict[str, list[str]]:
    """The attributes `saga.messages` puts on a command, a reply and a domain event, read off events it
    makes: the document follows the code, not a list kept beside it."""
    command = command_event(_AttributeProbe(), event_id="p", source="p", saga_type="p", saga_id="p", step=0)
    made = {"command": command, "reply": reply_event(Reply(), command=command, source="p"),
            "domain": domain_event("p", event_id="p", source="p", key="p", data={})}
    return {kind: sorted(event.get_attributes()) for kind, event in made.items()}


@dataclasses.dataclass
class _Sent:
    """A command class, the sagas that send it (saga type -> their source) and where in them."""

    command: type[Command]
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    uses: list[str] = dataclasses.field(default_factory=list)


def _commands(engines: Iterable[SagaEngine[Any]]) -> dict[str, _Sent]:
    """Every command of every version of every saga, by class name."""
    sent: dict[str, _Sent] = {}
    for engine in sorted(engines, key=lambda e: e.definition.name):
        for version, definition in sorted(engine.definitions.items()):
            for each in definition.steps:
                if not isinstance(each, ParticipantStep):
                    continue
                roles = [(each.command_type, f"step {each.name}")]
                if each.compensation_type is not None:
                    roles.append((each.compensation_type, f"compensation {each.compensation_name} of step {each.name}"))
                for command, role in roles:
                    entry = sent.setdefault(command.__name__, _Sent(command))
                    if entry.command is not command:
                        raise ValueError(f"two different commands are named {command.__name__}")
                    entry.sources[definition.name] = engine.source
                    entry.uses.append(f"{definition.name} v{version}: {role}")
    return dict(sorted(sent.items()))


class _Document:
    """The document being built: messages, the channels that carry them, operations and schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {ATTRIBUTES_SCHEMA: {
            "type": "object",
            "description": "CloudEvents 1.0 attributes; in binary mode `ce_<name>` Kafka record headers or "
                           "`ce-<name>` HTTP headers, `datacontenttype` the `content-type` header.",
            "properties": {name: {"type": "string", "description": text, **_FIXED.get(name, {})}
                           for name, text in ATTRIBUTES.items()}}}
        self.messages: dict[str, Any] = {}
        self.carried: dict[str, list[str]] = {BROKER: [], SOURCES: []}
        self.operations: dict[str, Any] = {}

    def message(self, channel: str, name: str, summary: str, payload: type[Any] | None, attributes: Iterable[str],
                values: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
        """Add a message on `channel`; returns the reference an operation uses."""
        if name in self.messages:
            raise ValueError(f"two different messages are named {name}")
        required = sorted(attributes)
        if undescribed := set(required) - set(ATTRIBUTES):
            raise ValueError(f"describe the attribute(s) {sorted(undescribed)} in saga.asyncapi.ATTRIBUTES")
        # What the attributes mean is said once (ATTRIBUTES_SCHEMA); a message adds which it carries and
        # the values it fixes.
        headers = {"allOf": [{"$ref": f"#/components/schemas/{ATTRIBUTES_SCHEMA}"},
                             {"type": "object", "required": required, "properties": dict(values)}]}
        message: dict[str, Any] = {"name": name, "title": name, "summary": summary, "contentType": JSON,
                                   "headers": headers, "payload": self._payload(payload)}
        if PARTITION_KEY in required:
            message["bindings"] = {"kafka": {"bindingVersion": "0.5.0", "key": {
                "type": "string", "description": f"the `{PARTITION_KEY}` attribute"}}}
        self.messages[name] = message
        self.carried[channel].append(name)
        return {"$ref": f"#/channels/{channel}/messages/{name}"}

    def _payload(self, payload: type[Any] | None) -> dict[str, Any]:
        """A reference to the data's JSON Schema, in its wire form (serialization mode): money is a decimal
        string, as `saga.messages.to_data` writes it."""
        if payload is None:
            return {"type": "object", "description": "not read: the event only wakes its receiver"}
        schema = TypeAdapter(payload).json_schema(mode="serialization", ref_template="#/components/schemas/{model}")
        for name, each in {**schema.pop("$defs", {}), payload.__name__: schema}.items():
            if self.schemas.setdefault(name, each) != each:
                raise ValueError(f"two different data schemas are named {name}")
        return {"$ref": f"#/components/schemas/{payload.__name__}"}

    def channel(self, name: str, address: str | None, title: str, description: str) -> dict[str, Any]:
        return {"address": address, "title": title, "description": description,
                "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in sorted(self.carried[name])}}


def asyncapi(engines: Iterable[SagaEngine[Any]], events: Sequence[EventDoc], *, title: str, version: str,
             description: str, broker_topic: str) -> dict[str, Any]:
    """The document: a request/reply `send` operation per command (its replies as the reply), one per
    event of `events`; the broker's channel (`broker_topic`) and, for Knative sources' events, one that
    is no topic."""
    doc, probed, commands = _Document(), attributes_set_by_code(), _commands(engines)
    answers: dict[type[Reply], list[type[Command]]] = {}  # reply -> the commands it answers
    for each in commands.values():
        for reply in each.command.REPLIES:
            answers.setdefault(reply, []).append(each.command)
    reply_refs: dict[type[Reply], dict[str, str]] = {}
    for reply, answered in sorted(answers.items(), key=lambda item: item[0].__name__):
        reply_refs[reply] = doc.message(
            BROKER, reply.__name__, f"{reply.OUTCOME} reply to {', '.join(c.__name__ for c in answered)}", reply,
            probed["reply"], {
                "type": {"const": REPLY_TYPE}, "source": {"enum": sorted({c.HANDLER for c in answered})},
                SAGA_TYPE: {"enum": sorted({saga for c in answered for saga in commands[c.__name__].sources})},
                REPLY_KIND: {"const": reply.__name__}, REPLY_OUTCOME: {"const": str(reply.OUTCOME)}})
    for name, each in commands.items():
        ref = doc.message(BROKER, name, f"Command to {each.command.HANDLER}", each.command, probed["command"], {
            "type": {"const": each.command.TYPE}, "source": {"enum": sorted(set(each.sources.values()))},
            SAGA_TYPE: {"enum": sorted(each.sources)}})
        doc.operations[f"send{name}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{BROKER}"}, "messages": [ref],
            "summary": f"{', '.join(sorted(each.sources))} ask {each.command.HANDLER}",
            "description": "Sent by " + "; ".join(each.uses) + ".",
            "reply": {"channel": {"$ref": f"#/channels/{BROKER}"},
                      "messages": [reply_refs[reply] for reply in each.command.REPLIES]},
        }
    for event in events:
        channel, action = (SOURCES, "receive") if event.knative_source else (BROKER, "send")
        values = {"type": {"const": event.event_type}, **({"source": {"const": event.source}} if event.source else {})}
        ref = doc.message(channel, event.name, event.summary, event.payload,
                          _SOURCE_ATTRIBUTES if event.knative_source else probed["domain"], values)
        doc.operations[f"{action}{event.name}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{channel}"}, "messages": [ref],
            "summary": event.summary,
            "description": f"Sent by {event.sender}; received by {', '.join(event.receivers)}.",
        }

    channels = {BROKER: doc.channel(
        BROKER, broker_topic, "The Knative Broker",
        "One Kafka-backed Knative Broker carries every command, reply and domain event, in binary mode, keyed by "
        "`partitionkey`; Triggers route them to the functions by their attributes.")}
    if doc.carried[SOURCES]:
        channels[SOURCES] = doc.channel(
            SOURCES, None, "Knative sources",
            "Not a topic: a Knative source posts its events straight to its sink function over HTTP.")
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version, "description": description},
        "defaultContentType": JSON,
        "channels": channels,
        "operations": doc.operations,
        "components": {"messages": doc.messages, "schemas": doc.schemas},
    }

"""CloudEvents in Kafka records, binary content mode, as the Knative Kafka broker stores them:
attributes and extensions in `ce_*` headers, data in the value, `partitionkey` as the record key."""

from __future__ import annotations

from dataclasses import dataclass

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary, to_binary
from confluent_kafka import Message


@dataclass(frozen=True)
class Record:
    """A record to write: a reply, a dead letter, a re-injected event."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def kafka_record(event: CloudEvent, topic: str) -> Record:
    """The event in Kafka's binary mode (record key = its `partitionkey`)."""
    if "datacontenttype" not in event:  # the Kafka binding needs it for the content-type header
        event["datacontenttype"] = "application/json"
    message = to_binary(event)
    headers = {name: _bytes(v) or b"" for name, v in message.headers.items()}
    return Record(topic, _bytes(message.key), _bytes(message.value), headers)


def event_of(message: Message) -> CloudEvent | None:
    """The CloudEvent a consumed record holds, or None when it holds none."""
    headers = {str(k): _bytes(v) or b"" for k, v in (message.headers() or [])}  # type: ignore[str-unpack]
    try:
        return from_binary(KafkaMessage(headers=headers, key=message.key(), value=message.value() or b""))
    except Exception:
        return None


def header_matches(message: Message, wanted: dict[str, str]) -> bool:
    """A Trigger's filter (`saga.eventing.dispatch.matches`) checked on a record's `ce_*` headers,
    without decoding the event: each Trigger skips most records, so decoding them all is waste."""
    headers = dict(message.headers() or [])
    return all(value == "" or headers.get(f"ce_{name}", b"") == value.encode() for name, value in wanted.items())

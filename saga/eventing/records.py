"""CloudEvents (the SDK's objects) in Kafka records, binary content mode, as the Knative Kafka broker
stores them (`saga.eventing.binding`): attributes in `ce_*` headers, `partitionkey` as the record key
and a header, data in the value. For the tools that build or read whole events: `saga replay`, tests."""

from __future__ import annotations

from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary
from confluent_kafka import Message

from saga.eventing.binding import Record, raw_event

__all__ = ["Record", "event_of", "header_matches", "kafka_record"]


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def kafka_record(event: CloudEvent, topic: str) -> Record:
    """The event in Kafka's binary mode (record key = its `partitionkey`, kept as a header too)."""
    return raw_event(event).record(topic)


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

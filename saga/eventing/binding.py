"""A CloudEvent moved between HTTP and a Kafka record as Knative's broker moves it, without decoding
its data: the receiver (HTTP in, record out), the dispatcher (record in, HTTP out; the reply HTTP in,
record out).

Binary content mode on both sides: attributes go between `ce-` HTTP headers and `ce_` record headers,
`datacontenttype` between `Content-Type` and the record's `content-type`, the data's bytes pass
through. A structured-mode HTTP event (`application/cloudevents+json`) is taken apart once, on the
way in. The record key is the `partitionkey` extension, which also stays a `ce_partitionkey` header:
Knative 1.22's receiver and dispatcher write through the CloudEvents Java SDK 4.0.1's
PartitionKeyExtensionInterceptor, which sets the key and keeps the header, and the SDK's Kafka reader
takes `partitionkey` from the header alone (docs/events.md).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, unquote

from cloudevents.http import CloudEvent

SPEC_VERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "type")
PARTITION_KEY = "partitionkey"
_NAME = re.compile(r"[a-z0-9]+")  # CloudEvents 1.0: attribute names are lower-case letters and digits
# HTTP binding: space, '"', '%' and anything outside printable ASCII are percent-encoded in header values.
_PLAIN = re.compile(r"[\x21\x23-\x24\x26-\x7e]*")
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')
_JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]*\+)?json(;.*)?$", re.IGNORECASE)


class InvalidEvent(ValueError):
    """Not a valid CloudEvent (a 400 at the ingress; a failed delivery when it is a reply)."""


@dataclass(frozen=True)
class Record:
    """A record to write: a reply, a dead letter, a re-injected event."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass(frozen=True)
class RawEvent:
    """A CloudEvent with its attributes as text (the Kafka and HTTP bindings' canonical strings) and
    its data as the bytes it came with."""

    attributes: dict[str, str]
    data: bytes | None

    def __getitem__(self, name: str) -> str:
        return self.attributes[name]

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.attributes.get(name, default)

    def with_attributes(self, **extra: str) -> RawEvent:
        return RawEvent({**self.attributes, **extra}, self.data)

    def without(self, names: Iterable[str]) -> RawEvent:
        dropped = set(names)
        return RawEvent({k: v for k, v in self.attributes.items() if k not in dropped}, self.data)

    def record(self, topic: str) -> Record:
        """The Kafka record, binary mode, keyed by `partitionkey` (kept as a header too)."""
        headers = {header_name(name): value.encode() for name, value in self.attributes.items()}
        key = self.attributes.get(PARTITION_KEY)
        return Record(topic, key.encode() if key is not None else None, self.data, headers)

    def http(self) -> tuple[dict[str, str], bytes]:
        """Headers and body of a binary-mode HTTP request or response."""
        headers = {}
        for name, value in self.attributes.items():
            if name == "datacontenttype":
                headers["Content-Type"] = value
            else:
                headers[f"ce-{name}"] = value if _PLAIN.fullmatch(value) else quote(value, safe=_SAFE)
        return headers, self.data or b""


def cloud_event(raw: RawEvent) -> CloudEvent:
    """The SDK's event, with JSON data decoded (data that is not JSON stays as it came, for the
    handler to refuse), as the SDK's own reader would give it, at a fraction of its cost."""
    data: Any = None
    if raw.data:
        try:
            data = json.loads(raw.data)
        except (ValueError, UnicodeDecodeError):
            data = raw.data
    return CloudEvent(dict(raw.attributes), data)


def raw_event(event: CloudEvent) -> RawEvent:
    """An SDK event as the bindings carry it: attributes as canonical strings, data as JSON bytes
    (or the bytes it holds)."""
    attributes = {
        # The SDK's Kafka reader gives `partitionkey` as the record key's bytes.
        name: canonical(name, value.decode() if isinstance(value, bytes) else value)
        for name, value in event.get_attributes().items() if value is not None
    }
    data = event.get_data()
    if data is None or isinstance(data, bytes):
        return RawEvent(attributes, data)
    attributes.setdefault("datacontenttype", "application/json")  # the bindings need a content type
    return RawEvent(attributes, json.dumps(data, separators=(",", ":")).encode())


def header_name(attribute: str) -> str:
    """The record header that carries `attribute` in binary mode."""
    return "content-type" if attribute == "datacontenttype" else f"ce_{attribute}"


def from_record(headers: Iterable[tuple[str, bytes | str | None]], value: bytes | None) -> RawEvent:
    """The event a binary-mode record holds; InvalidEvent when it holds none."""
    attributes = {}
    for name, raw in headers:
        try:
            text = raw.decode() if isinstance(raw, bytes) else (raw or "")
        except UnicodeDecodeError as exc:
            raise InvalidEvent(f"header {name!r} is not UTF-8") from exc
        lowered = name.lower()
        if lowered.startswith("ce_"):
            attributes[lowered[3:]] = text
        elif lowered == "content-type":
            attributes["datacontenttype"] = text
    return _checked(attributes, value)


def from_http(headers: Mapping[str, str], body: bytes) -> RawEvent:
    """The event of an HTTP request or response in binary or structured mode; InvalidEvent if none."""
    content_type = ""
    attributes = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered.startswith("ce-"):
            try:
                attributes[lowered[3:]] = unquote(value, errors="strict") if "%" in value else value
            except UnicodeDecodeError as exc:
                raise InvalidEvent(f"header {name!r} is not percent-encoded UTF-8") from exc
        elif lowered == "content-type":
            content_type = value
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == BATCH:
        raise InvalidEvent("batched CloudEvents are not accepted")
    if media_type == STRUCTURED and "specversion" not in attributes:
        return _structured(body)
    if content_type:
        attributes["datacontenttype"] = content_type
    return _checked(attributes, body or None)


def _structured(body: bytes) -> RawEvent:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidEvent("a structured-mode event must be a JSON object") from exc
    if not isinstance(document, dict):
        raise InvalidEvent("a structured-mode event must be a JSON object")
    attributes = {}
    for name, value in document.items():
        if name in ("data", "data_base64") or value is None:
            continue
        attributes[name] = canonical(name, value)
    data: bytes | None = None
    if document.get("data_base64") is not None:
        if document.get("data") is not None:
            raise InvalidEvent("an event has data or data_base64, not both")
        encoded = document["data_base64"]
        if not isinstance(encoded, str):
            raise InvalidEvent("data_base64 must be a string")
        try:
            data = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise InvalidEvent("data_base64 is not base64") from exc
    elif "data" in document:
        content = attributes.setdefault("datacontenttype", "application/json")
        value = document["data"]
        if isinstance(value, str) and not _JSON_TYPE.match(content):
            data = value.encode()
        else:
            data = json.dumps(value, separators=(",", ":")).encode()
    return _checked(attributes, data)


def canonical(name: str, value: Any) -> str:
    """An attribute's value as the bindings carry it: the CloudEvents type system's canonical string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if not -(2**31) <= value < 2**31:
            raise InvalidEvent(f"attribute {name!r} is outside the CloudEvents integer range")
        return str(value)
    if isinstance(value, str):
        return value
    raise InvalidEvent(f"attribute {name!r} must be a string, a boolean or an integer")


def _checked(attributes: dict[str, str], data: bytes | None) -> RawEvent:
    version = attributes.get("specversion")
    if version != SPEC_VERSION:
        raise InvalidEvent("specversion must be 1.0" if version else "specversion is missing")
    for name in REQUIRED:
        if not attributes.get(name):
            raise InvalidEvent(f"the {name} attribute is missing or empty")
    for name in attributes:
        if not _NAME.fullmatch(name):
            raise InvalidEvent(f"attribute name {name!r} is not lower-case letters and digits")
    if "time" in attributes:
        try:
            datetime.fromisoformat(attributes["time"])
        except ValueError as exc:
            raise InvalidEvent("time is not an RFC 3339 timestamp") from exc
    return RawEvent(attributes, data)

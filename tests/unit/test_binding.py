"""CloudEvents between HTTP and Kafka records, as Knative's receiver and dispatcher move them."""

from __future__ import annotations

import base64
import json

import pytest

from saga.eventing.binding import InvalidEvent, from_http, from_record

BINARY = {"ce-specversion": "1.0", "ce-id": "e-1", "ce-source": "/s", "ce-type": "t.created",
          "ce-partitionkey": "saga-1", "Content-Type": "application/json"}


def test_binary_http_becomes_a_record_keyed_by_partitionkey_that_keeps_the_header() -> None:
    record = from_http(BINARY, b'{"a": 1}').record("topic")
    assert record.key == b"saga-1"
    assert record.headers["ce_partitionkey"] == b"saga-1"  # the Java SDK reads it from here only
    assert record.headers["content-type"] == b"application/json"
    assert record.value == b'{"a": 1}', "the data's bytes pass through untouched"
    assert "ce_datacontenttype" not in record.headers


def test_a_record_comes_back_as_the_same_binary_http_event() -> None:
    record = from_http(BINARY, b'{"a": 1}').record("topic")
    headers, body = from_record(record.headers.items(), record.value).http()
    assert headers == {k: v for k, v in BINARY.items()} and body == b'{"a": 1}'


def test_structured_mode_is_taken_apart_with_canonical_attribute_strings() -> None:
    document = {"specversion": "1.0", "id": "e-2", "source": "/s", "type": "t", "flag": True, "count": -3,
                "partitionkey": "k", "data": {"x": [1, 2]}}
    event = from_http({"content-type": "application/cloudevents+json"}, json.dumps(document).encode())
    assert event.attributes["flag"] == "true" and event.attributes["count"] == "-3"
    assert event.attributes["datacontenttype"] == "application/json"
    assert json.loads(event.data or b"") == {"x": [1, 2]}
    text = from_http({"content-type": "application/cloudevents+json"}, json.dumps(
        {**document, "datacontenttype": "text/plain", "data": "hello"}).encode())
    assert text.data == b"hello"
    encoded = from_http({"content-type": "application/cloudevents+json"}, json.dumps(
        {**document, "data": None, "data_base64": base64.b64encode(b"\x00\xff").decode()}).encode())
    assert encoded.data == b"\x00\xff"


def test_header_values_are_percent_coded_as_the_http_binding_says() -> None:
    event = from_http({**BINARY, "ce-subject": "a%20b%25"}, b"")
    assert event.attributes["subject"] == "a b%"
    headers, _ = event.http()
    assert headers["ce-subject"] == "a%20b%25"


@pytest.mark.parametrize(("headers", "body"), [
    ({k: v for k, v in BINARY.items() if k != "ce-id"}, b"{}"),
    ({**BINARY, "ce-specversion": "0.3"}, b"{}"),
    ({**BINARY, "ce-Bad_Name": "x"}, b"{}"),
    ({**BINARY, "ce-time": "noon"}, b"{}"),
    ({**BINARY, "ce-subject": "%ff"}, b"{}"),
    ({"content-type": "application/cloudevents+json"}, b"[1]"),
    ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "i", "source": "/s", '
                                                         b'"type": "t", "n": 1.5}'),
    ({"content-type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "i", "source": "/s", '
                                                         b'"type": "t", "n": 4294967296}'),
    ({"content-type": "application/cloudevents-batch+json"}, b"[]"),
    ({"content-type": "application/json"}, b"{}"),
], ids=["no id", "old spec", "bad name", "bad time", "bad percent", "array", "float", "too big", "batch", "plain"])
def test_what_is_not_a_valid_cloudevent_is_refused(headers: dict[str, str], body: bytes) -> None:
    with pytest.raises(InvalidEvent):
        from_http(headers, body)


def test_a_record_without_the_required_attributes_is_not_an_event() -> None:
    with pytest.raises(InvalidEvent):
        from_record([("ce_specversion", b"1.0"), ("ce_id", b"x")], b"")
    with pytest.raises(InvalidEvent):
        from_record([("ce_specversion", b"1.0"), ("ce_id", b"\xff"), ("ce_source", b"/"), ("ce_type", b"t")], b"")

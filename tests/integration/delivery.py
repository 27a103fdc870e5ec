"""Delivering a CloudEvent to an event handler through the real `saga.delivery.serve` edge,
in-process (binary mode, as the dispatcher sends it)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flask
import sqlalchemy as sa
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http

from saga.delivery import Handler, serve

_app = flask.Flask("delivery-test")


@dataclasses.dataclass(frozen=True)
class Delivered:
    status: int
    reply: CloudEvent | None
    problem: dict[str, Any] | None


def deliver(db: sa.Engine, inbox: sa.Table, consumer: str, handle: Handler, event: CloudEvent) -> Delivered:
    headers, body = to_binary(event)
    with _app.test_request_context("/", method="POST", headers=dict(headers), data=body):
        answer, status, answer_headers = serve(flask.request, engine=db, inbox=inbox, consumer=consumer, handle=handle)
    if status == 200:
        return Delivered(status, from_http(answer_headers, answer), None)
    problem = json.loads(answer) if answer else None
    return Delivered(status, None, problem)

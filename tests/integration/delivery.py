"""Delivering a CloudEvent to an event handler through the real `saga.delivery.serve` edge,
in-process (binary mode, as the dispatcher sends it)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent, from_http
from starlette.requests import Request

from saga.delivery import serve
from saga.inbox import Handler, Inbox
from saga.transaction import Database


@dataclasses.dataclass(frozen=True)
class Delivered:
    status: int
    reply: CloudEvent | None
    problem: dict[str, Any] | None


def deliver(database: Database, inbox: Inbox, consumer: str, handle: Handler, event: CloudEvent) -> Delivered:
    headers, body = to_binary(event)
    scope = {
        "type": "http", "method": "POST", "path": "/", "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        + [(b"content-length", str(len(body)).encode())],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    response = asyncio.run(serve(Request(scope, receive), database=database, inbox=inbox, consumer=consumer,
                                 handle=handle))
    answer = bytes(response.body)
    if response.status_code == 200:
        return Delivered(response.status_code, from_http(dict(response.headers), answer), None)
    return Delivered(response.status_code, None, json.loads(answer) if answer else None)

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


def participant(command: CloudEvent) -> tuple[Inbox, str, Handler]:
    """The real participant handler for a command (inbox, consumer, handler), as its Trigger routes it."""
    from functions.account.messages import ReleaseCredit, ReserveCredit
    from functions.account.release_credit import INBOX as ACCOUNTS
    from functions.account.release_credit import _release_credit
    from functions.account.reserve_credit import _reserve_credit
    from functions.goods.messages import ReleaseGoods, ReserveGoods
    from functions.goods.release import INBOX as GOODS
    from functions.goods.release import _release
    from functions.goods.reserve import _reserve

    routes: dict[str, tuple[Inbox, str, Handler]] = {
        ReserveGoods.TYPE: (GOODS, "goods-reserve", _reserve),
        ReleaseGoods.TYPE: (GOODS, "goods-release", _release),
        ReserveCredit.TYPE: (ACCOUNTS, "account-reserve-credit", _reserve_credit),
        ReleaseCredit.TYPE: (ACCOUNTS, "account-release-credit", _release_credit),
    }
    return routes[command["type"]]


def drive(database: Database, saga_inbox: Inbox, handle_reply: Handler, command: CloudEvent | None,
          *, limit: int = 20) -> list[str]:
    """Carry a saga to its end in-process: each command to its participant, each reply to the saga
    (`handle_reply`, as the step function would). The command types sent, in order."""
    sent: list[str] = []
    while command is not None:
        assert len(sent) < limit, f"no end after {limit} commands: {sent}"
        sent.append(command["type"])
        inbox, consumer, handle = participant(command)
        answered = deliver(database, inbox, consumer, handle, command)
        assert answered.status == 200 and answered.reply is not None, answered
        moved = deliver(database, saga_inbox, "order-saga", handle_reply, answered.reply)
        assert moved.status in (200, 202), moved
        command = moved.reply
    return sent

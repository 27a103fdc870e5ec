"""order-saga (functions-framework target `order_saga_step`): each participant reply moves its
saga (a CreateOrderSaga or a CancelOrderSaga, by its `sagatype`) by one transition; the next command
is the HTTP reply, which the broker publishes. The command is stored with the inbox row, so a
redelivered reply re-sends the same command."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.order.service import handle_reply
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import serve
from saga.inbox import Inbox

INBOX = Inbox("orders.inbox")


@aio.http
async def order_saga_step(request: Request) -> Response:
    return await serve(request, database=database(settings().database_url), inbox=INBOX, consumer="order-saga",
                       handle=handle_reply)

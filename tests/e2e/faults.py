"""Deliberately broken revisions of goods-reserve (functions-framework targets), rolled out by the
replay tests with `Stack.redeploy` as a bad deploy would be, and rolled back the same way."""

from __future__ import annotations

from cloudevents.http import from_http
from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.goods.messages import ReserveGoods
from functions.goods.reserve import goods_reserve
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import problem
from saga.messages import from_data

APPLE = 2


@aio.http
async def goods_reserve_rejecting_apples(request: Request) -> Response:
    """A bug that refuses every ReserveGoods for apples as malformed: 400, so straight to dead letters."""
    event = from_http(dict(request.headers), await request.body())
    if (event.get_data() or {}).get("goods_id") == APPLE:
        return problem(400, "Invalid message", "this revision cannot read apple orders")
    return await goods_reserve(request)


@aio.http
async def goods_reserve_applying_every_delivery(request: Request) -> Response:
    """A handler that is not idempotent: it takes the stock on every delivery, before the real
    (deduplicated) handler runs. A replay must show the difference."""
    event = from_http(dict(request.headers), await request.body())
    command = from_data(ReserveGoods, event.get_data())
    await database(settings().database_url).run(lambda tx: tx.execute(
        "UPDATE goods.goods SET stock = stock - %s WHERE id = %s AND stock >= %s",
        (command.quantity, command.goods_id, command.quantity)))
    return await goods_reserve(request)

"""Deliberately broken revisions of goods-reserve (functions-framework targets), rolled out by the
replay tests with `Stack.redeploy` as a bad deploy would be, and rolled back the same way."""

from __future__ import annotations

import functions_framework
import sqlalchemy as sa
from cloudevents.http import from_http
from flask import Request

from functions.goods.main import goods_reserve
from functions.goods.messages import ReserveGoods
from functions.goods.schema import goods
from functions.platform.config import settings
from functions.platform.database import engine
from saga.delivery import ResponseTuple, problem
from saga.messages import from_data

APPLE = 2


@functions_framework.http
def goods_reserve_rejecting_apples(request: Request) -> ResponseTuple:
    """A bug that refuses every ReserveGoods for apples as malformed: 400, so straight to dead letters."""
    event = from_http(dict(request.headers), request.get_data())
    if (event.get_data() or {}).get("goods_id") == APPLE:
        return problem(400, "Invalid message", "this revision cannot read apple orders")
    return goods_reserve(request)


@functions_framework.http
def goods_reserve_applying_every_delivery(request: Request) -> ResponseTuple:
    """A handler that is not idempotent: it takes the stock on every delivery, before the real
    (deduplicated) handler runs. A replay must show the difference."""
    event = from_http(dict(request.headers), request.get_data())
    command = from_data(ReserveGoods, event.get_data())
    with engine(settings().database_url).begin() as tx:
        tx.execute(
            sa.update(goods)
            .where(goods.c.id == command.goods_id, goods.c.stock >= command.quantity)
            .values(stock=goods.c.stock - command.quantity)
        )
    return goods_reserve(request)

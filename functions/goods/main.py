"""Goods functions (functions-framework targets): thin edges over functions.goods.service."""

from __future__ import annotations

import functions_framework
from flask import Request

from functions.goods import schema, service
from functions.goods.messages import ReleaseGoods, ReserveGoods
from functions.platform.config import settings
from functions.platform.database import engine
from functions.platform.ids import MAX_INTEGER_ID
from functions.platform.problems import NotFound, json_api, json_response
from functions.platform.routing import Router
from functions.platform.security import authenticate
from saga.delivery import ResponseTuple, serve
from saga.participant import command_handler

_reserve = command_handler(ReserveGoods, service.reserve_goods, source="/functions/goods-reserve")
_release = command_handler(ReleaseGoods, service.release_goods, source="/functions/goods-release")


@functions_framework.http
def goods_reserve(request: Request) -> ResponseTuple:
    return serve(request, engine=engine(settings().database_url), inbox=schema.inbox,
                 consumer="goods-reserve", handle=_reserve)


@functions_framework.http
def goods_release(request: Request) -> ResponseTuple:
    return serve(request, engine=engine(settings().database_url), inbox=schema.inbox,
                 consumer="goods-release", handle=_release)


def _get_goods(request: Request, goods_id: int):  # type: ignore[no-untyped-def]
    authenticate(request)  # any authenticated caller may read the catalogue
    if goods_id > MAX_INTEGER_ID:  # beyond the id column's range: cannot exist
        raise NotFound(f"goods {goods_id} does not exist")
    with engine(settings().database_url).connect() as tx:
        found = service.describe_goods(tx, goods_id)
    if found is None:
        raise NotFound(f"goods {goods_id} does not exist")
    return json_response(found)


_router = Router([("/goods/<int:goods_id>", ["GET"], _get_goods)])


@functions_framework.http
@json_api
def goods_api(request: Request):  # type: ignore[no-untyped-def]
    return _router.dispatch(request)

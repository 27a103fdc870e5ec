"""goods-reserve (functions-framework target `goods_reserve`): the ReserveGoods command handler."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.goods import service
from functions.goods.messages import ReserveGoods
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import serve
from saga.inbox import Inbox
from saga.participant import command_handler

INBOX = Inbox("goods.inbox")
_reserve = command_handler(ReserveGoods, service.reserve_goods)


@aio.http
async def goods_reserve(request: Request) -> Response:
    return await serve(request, database=database(settings().database_url), inbox=INBOX,
                       consumer="goods-reserve", handle=_reserve)

"""goods-release (functions-framework target `goods_release`): the ReleaseGoods compensation handler."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.goods import service
from functions.goods.messages import ReleaseGoods
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import serve
from saga.inbox import Inbox
from saga.participant import command_handler

INBOX = Inbox("goods.inbox")
_release = command_handler(ReleaseGoods, service.release_goods)


@aio.http
async def goods_release(request: Request) -> Response:
    return await serve(request, database=database(settings().database_url), inbox=INBOX,
                       consumer="goods-release", handle=_release)

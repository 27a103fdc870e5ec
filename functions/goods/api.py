"""goods-api (functions-framework target `goods_api`): GET /goods/{id}."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.goods import service
from functions.platform.config import settings
from functions.platform.database import database
from functions.platform.ids import MAX_INTEGER_ID
from functions.platform.problems import NotFound, json_api, json_response
from functions.platform.routing import Router
from functions.platform.security import authenticate


async def _get_goods(request: Request, goods_id: int) -> Response:
    await authenticate(request)  # any authenticated caller may read the catalogue
    if goods_id > MAX_INTEGER_ID:  # beyond the id column's range: cannot exist
        raise NotFound(f"goods {goods_id} does not exist")
    db = database(settings().database_url)
    found = await db.call(db.autocommit, lambda tx: service.describe_goods(tx, goods_id))
    if found is None:
        raise NotFound(f"goods {goods_id} does not exist")
    return json_response(found)


_router = Router([("/goods/<int:goods_id>", ["GET"], _get_goods)])


@aio.http
@json_api
async def goods_api(request: Request) -> Response:
    return await _router.dispatch(request)

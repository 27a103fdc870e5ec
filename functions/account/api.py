"""account-api (functions-framework target `account_api`): GET /account/{customerId}."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.account import service
from functions.platform.config import settings
from functions.platform.database import database
from functions.platform.ids import CUSTOMER_ID
from functions.platform.problems import NotFound, json_api, json_response
from functions.platform.routing import Router
from functions.platform.security import authenticate, require_customer_access


async def _get_account(request: Request, customer_id: str) -> Response:
    require_customer_access(await authenticate(request), customer_id)
    if not CUSTOMER_ID.fullmatch(customer_id):  # customer ids are this shape: anything else cannot exist
        raise NotFound(f"account {customer_id} does not exist")
    db = database(settings().database_url)
    found = await db.call(db.autocommit, lambda tx: service.describe_account(tx, customer_id))
    if found is None:
        raise NotFound(f"account {customer_id} does not exist")
    return json_response(found)


_router = Router([("/account/<customer_id>", ["GET"], _get_account)])


@aio.http
@json_api
async def account_api(request: Request) -> Response:
    return await _router.dispatch(request)

"""account-reserve-credit (functions-framework target `account_reserve_credit`): the ReserveCredit
command handler."""

from __future__ import annotations

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.account import service
from functions.account.messages import ReserveCredit
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import serve
from saga.inbox import Inbox
from saga.participant import command_handler

INBOX = Inbox("accounts.inbox")
_reserve_credit = command_handler(ReserveCredit, service.reserve_credit)


@aio.http
async def account_reserve_credit(request: Request) -> Response:
    return await serve(request, database=database(settings().database_url), inbox=INBOX,
                       consumer="account-reserve-credit", handle=_reserve_credit)

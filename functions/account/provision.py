"""account-provision (functions-framework target `account_provision`): opens the credit account of a
newly registered user (the UserRegistered event of auth-api's outbox)."""

from __future__ import annotations

from cloudevents.http import CloudEvent
from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.account import service
from functions.account.messages import USER_REGISTERED, UserRegistered
from functions.platform.config import settings
from functions.platform.database import database
from saga.delivery import serve
from saga.errors import InvalidMessage
from saga.inbox import Decide, Inbox
from saga.messages import from_data
from saga.transaction import Tx

INBOX = Inbox("accounts.inbox")


def _provision(tx: Tx, event: CloudEvent) -> Decide:
    if event["type"] != USER_REGISTERED:
        raise InvalidMessage(f"expected {USER_REGISTERED}, got {event['type']}")
    registered = from_data(UserRegistered, event.get_data())

    def decide() -> None:
        service.provision_account(tx, registered, settings().initial_credit)

    return decide


@aio.http
async def account_provision(request: Request) -> Response:
    return await serve(request, database=database(settings().database_url), inbox=INBOX,
                       consumer="account-provision", handle=_provision)

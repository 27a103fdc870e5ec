"""Account functions (functions-framework targets): thin edges over functions.account.service."""

from __future__ import annotations

import functions_framework
import sqlalchemy as sa
from cloudevents.http import CloudEvent
from flask import Request

from functions.account import schema, service
from functions.account.messages import USER_REGISTERED, ReleaseCredit, ReserveCredit, UserRegistered
from functions.platform.config import settings
from functions.platform.database import engine
from functions.platform.ids import CUSTOMER_ID
from functions.platform.problems import NotFound, json_api, json_response
from functions.platform.routing import Router
from functions.platform.security import authenticate, require_customer_access
from saga.delivery import ResponseTuple, serve
from saga.errors import InvalidMessage
from saga.messages import from_data
from saga.participant import command_handler

_reserve_credit = command_handler(
    ReserveCredit, service.reserve_credit, source="/functions/account-reserve-credit"
)

_release_credit = command_handler(
    ReleaseCredit, service.release_credit, source="/functions/account-release-credit"
)


def _provision(tx: sa.Connection, event: CloudEvent) -> None:
    if event["type"] != USER_REGISTERED:
        raise InvalidMessage(f"expected {USER_REGISTERED}, got {event['type']}")
    service.provision_account(tx, from_data(UserRegistered, event.get_data()), settings().initial_credit)


@functions_framework.http
def account_reserve_credit(request: Request) -> ResponseTuple:
    return serve(request, engine=engine(settings().database_url), inbox=schema.inbox,
                 consumer="account-reserve-credit", handle=_reserve_credit)


@functions_framework.http
def account_release_credit(request: Request) -> ResponseTuple:
    return serve(request, engine=engine(settings().database_url), inbox=schema.inbox,
                 consumer="account-release-credit", handle=_release_credit)


@functions_framework.http
def account_provision(request: Request) -> ResponseTuple:
    return serve(request, engine=engine(settings().database_url), inbox=schema.inbox,
                 consumer="account-provision", handle=_provision)


def _get_account(request: Request, customer_id: str):  # type: ignore[no-untyped-def]
    require_customer_access(authenticate(request), customer_id)
    if not CUSTOMER_ID.fullmatch(customer_id):  # customer ids are this shape: anything else cannot exist
        raise NotFound(f"account {customer_id} does not exist")
    with engine(settings().database_url).connect() as tx:
        found = service.describe_account(tx, customer_id)
    if found is None:
        raise NotFound(f"account {customer_id} does not exist")
    return json_response(found)


_router = Router([("/account/<customer_id>", ["GET"], _get_account)])


@functions_framework.http
@json_api
def account_api(request: Request):  # type: ignore[no-untyped-def]
    return _router.dispatch(request)

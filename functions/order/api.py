"""order-api (functions-framework target `order_api`): POST /orders starts a CreateOrderSaga,
POST /orders/{id}/cancel a CancelOrderSaga, GET /orders, /orders/{id} (?wait) and /orders/{id}/saga
read them; for admins, GET /admin/sagas lists
sagas (those that need a person first) and POST /admin/sagas/{id}/resume takes a PARKED one up again.
Thin edges over functions.order.service."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from decimal import Decimal
from typing import Annotated, Any

from functions_framework import aio
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator
from starlette.requests import Request
from starlette.responses import Response

from functions.order import resumption, service
from functions.order.create_order_saga import ORDER_ENDED
from functions.platform.config import settings
from functions.platform.database import database, postgres_url
from functions.platform.events import publish_after_commit
from functions.platform.ids import CUSTOMER_ID, MAX_INTEGER_ID, ORDER_ID, SAGA_TYPE
from functions.platform.notices import Notices
from functions.platform.params import choice_param, int_param
from functions.platform.problems import (
    BadRequest,
    Conflict,
    NotFound,
    Unprocessable,
    json_api,
    json_body,
    json_response,
)
from functions.platform.routing import Router
from functions.platform.security import Principal, authenticate, require_admin, require_customer_access
from saga.crashpoints import crash_point
from saga.engine import SagaState
from saga.transaction import Database

MAX_WAIT_SECONDS = 30
UNDECIDED = ("PENDING", "CANCEL_PENDING")  # a saga is still deciding: ?wait waits on these
# What a saga's history records for operators only (exception text, who resumed it).
OPERATOR_DETAILS = {"reason", "by", "parkedFor"}


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # A JSON number or a decimal string; parsed straight to Decimal, never through float.
    amount: Annotated[Decimal, Field(gt=0, le=Decimal("1000000000"), decimal_places=2, allow_inf_nan=False)]


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customerId: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    goodsId: Annotated[StrictInt, Field(ge=1, le=MAX_INTEGER_ID)]
    goodsTotal: Annotated[StrictInt, Field(ge=1, le=100_000)]
    orderTotal: Money

    @field_validator("customerId", mode="before")
    @classmethod
    def _customer_id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _db() -> Database:
    return database(settings().database_url)


@functools.cache
def _endings() -> Notices:
    return Notices(postgres_url(settings().database_url), ORDER_ENDED, lambda payload: json.loads(payload)["orderId"])


async def _place_order(request: Request) -> Response:
    principal = await authenticate(request)
    # Decimal for JSON numbers: an amount is never a float, not even on its way in.
    body = OrderRequest.model_validate(await json_body(request, parse_float=Decimal))
    require_customer_access(principal, body.customerId)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
        raise BadRequest("Idempotency-Key must be 1-200 printable characters")
    try:
        order_id, command = await _db().run(lambda tx: service.place_order(
            tx, placed_by=principal.user_id, customer_id=body.customerId, goods_id=body.goodsId,
            goods_total=body.goodsTotal, order_total=body.orderTotal.amount, idempotency_key=key,
        ))
    except service.IdempotencyKeyReused as exc:
        raise Unprocessable("this Idempotency-Key was used for a different order", field="Idempotency-Key") from exc
    if command is not None:
        # After the commit: a crash here leaves the command in the outbox for the sweep.
        crash_point("order-api.after-commit")
        await publish_after_commit(service.outbox, [command])
        state = "PENDING"
    else:  # an Idempotency-Key replay: answer with the order as it is now
        row = await _find(order_id)
        state = row.state if row is not None else "PENDING"
    return json_response({"orderId": order_id, "state": state}, 202, {"Location": f"/orders/{order_id}"})


async def _list_orders(request: Request) -> Response:
    principal = await authenticate(request)
    wanted = request.query_params.get("customerId")
    if wanted is not None and not CUSTOMER_ID.fullmatch(wanted):
        raise Unprocessable("customerId must be 1-64 letters, digits, _ or -", field="customerId")
    if not principal.is_admin:
        wanted = principal.customer_id
        if wanted is None:
            return json_response([])
    limit = int_param(request, "limit", default=100, low=1, high=1000)
    found = await _db().call(_db().autocommit, lambda tx: service.list_orders(tx, customer_id=wanted, limit=limit))
    return json_response(found)


async def _find(order_id: str) -> Any | None:
    return await _db().call(_db().autocommit, lambda tx: service.find_order(tx, order_id))


async def _owned_order(principal: Principal, order_id: str) -> Any:
    if not ORDER_ID.fullmatch(order_id):  # order ids are UUIDs: anything else cannot exist
        raise NotFound(f"order {order_id} does not exist")
    row = await _find(order_id)
    if row is None:
        raise NotFound(f"order {order_id} does not exist")
    require_customer_access(principal, row.customer_id)
    return row


async def _get_order(request: Request, order_id: str) -> Response:
    principal = await authenticate(request)
    wait = int_param(request, "wait", default=0, low=0, high=MAX_WAIT_SECONDS)
    if not wait or not ORDER_ID.fullmatch(order_id):
        return json_response(service.order_view(await _owned_order(principal, order_id)))
    # Until it ends (or its cancel does) or the time is up: read once, then sleep until notified.
    deadline = time.monotonic() + wait
    with _endings().waiting(order_id) as ended:
        row = await _owned_order(principal, order_id)
        while row.state in UNDECIDED and (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(ended.wait(), timeout=left)
            except TimeoutError:
                break
            ended.clear()
            row = await _owned_order(principal, order_id)
    return json_response(service.order_view(row))


async def _get_saga(request: Request, order_id: str) -> Response:
    principal = await authenticate(request)
    await _owned_order(principal, order_id)
    found = await _db().call(_db().autocommit, lambda tx: service.store.describe(tx, order_id))
    if not found:
        raise NotFound(f"no saga for order {order_id}")
    if not principal.is_admin:
        found = [_customer_view(saga) for saga in found]
    # The order's CreateOrderSaga as before; any later saga over it (its cancel) beside it.
    first = next((saga for saga in found if saga["sagaType"] == service.saga_engine.definition.name), found[0])
    return json_response({**first, "otherSagas": [saga for saga in found if saga is not first]})


def _customer_view(saga: dict[str, Any]) -> dict[str, Any]:
    """What a customer sees of a saga: its state and steps, not the operators' notes."""
    history = [{k: v for k, v in entry.items() if k not in OPERATOR_DETAILS} for entry in saga["history"]]
    parked = "waiting for an operator" if saga["parkedReason"] is not None else None
    return {**saga, "parkedReason": parked, "history": history}


async def _cancel_order(request: Request, order_id: str) -> Response:
    principal = await authenticate(request)
    await _owned_order(principal, order_id)
    try:
        command = await _db().run(lambda tx: service.cancel_order(tx, order_id, by=principal.user_id))
    except service.OrderLocked as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        why = ("its CreateOrderSaga is still deciding; try again shortly" if exc.retry_after is not None
               else "only an APPROVED order can be cancelled")
        raise Conflict(f"order {order_id} is {exc.state}: {why}", headers=headers) from exc
    if command is None:  # gone between the read and the lock: cannot happen (orders are never deleted)
        raise NotFound(f"order {order_id} does not exist")
    await publish_after_commit(service.outbox, [command])
    return json_response({"orderId": order_id, "state": "CANCEL_PENDING"}, 202, {"Location": f"/orders/{order_id}"})


async def _list_sagas(request: Request) -> Response:
    require_admin(await authenticate(request))
    state = choice_param(request, "state", list(SagaState))
    saga_type = request.query_params.get("type")
    if saga_type is not None and not SAGA_TYPE.fullmatch(saga_type):
        raise Unprocessable("type must be a saga type's name (letters, digits, _)", field="type")
    older_than = request.query_params.get("olderThan")
    seconds = None if older_than is None else int_param(request, "olderThan", default=0, low=0, high=10**8)
    limit = int_param(request, "limit", default=100, low=1, high=1000)
    found = await _db().call(_db().autocommit, lambda tx: service.store.list_sagas(
        tx, state=state, saga_type=saga_type, older_than=seconds, limit=limit))
    return json_response(found)


async def _resume_saga(request: Request, saga_id: str) -> Response:
    principal = await authenticate(request)
    require_admin(principal)
    saga_type = choice_param(request, "type", sorted(service.engines))
    command = await resumption.resume(_db(), saga_id, by=principal.user_id, saga_type=saga_type)
    found = await _db().call(_db().autocommit, lambda tx: service.store.describe(tx, saga_id))
    return json_response(next(saga for saga in found if saga["sagaType"] == command["sagatype"]))


_router = Router(
    [
        ("/orders", ["POST"], _place_order),
        ("/orders", ["GET"], _list_orders),
        ("/orders/<order_id>", ["GET"], _get_order),
        ("/orders/<order_id>/saga", ["GET"], _get_saga),
        ("/orders/<order_id>/cancel", ["POST"], _cancel_order),
        ("/admin/sagas", ["GET"], _list_sagas),
        ("/admin/sagas/<saga_id>/resume", ["POST"], _resume_saga),
    ]
)


@aio.http
@json_api
async def order_api(request: Request) -> Response:
    return await _router.dispatch(request)

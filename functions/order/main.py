"""Order functions (functions-framework targets): the order HTTP API, the saga step handler and
the outbox sweep. Thin edges over functions.order.service and the saga engine."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Annotated, Any

import functions_framework
from flask import Request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from functions.order import schema, service
from functions.platform.config import settings
from functions.platform.database import engine
from functions.platform.events import publish_after_commit, relay_for, sweep_target
from functions.platform.ids import CUSTOMER_ID, MAX_INTEGER_ID, ORDER_ID
from functions.platform.problems import BadRequest, NotFound, Unprocessable, json_api, json_response
from functions.platform.routing import Router
from functions.platform.security import Principal, authenticate, require_customer_access
from saga.crashpoints import crash_point
from saga.delivery import ResponseTuple, serve

log = logging.getLogger(__name__)


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


def _db():  # type: ignore[no-untyped-def]
    return engine(settings().database_url)


def _place_order(request: Request) -> Any:
    principal = authenticate(request)
    body = OrderRequest.model_validate(request.get_json(force=True))
    require_customer_access(principal, body.customerId)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 200 and key.isprintable()):
        raise BadRequest("Idempotency-Key must be 1-200 printable characters")
    try:
        with _db().begin() as tx:
            order_id, command = service.place_order(
                tx, placed_by=principal.user_id, customer_id=body.customerId, goods_id=body.goodsId,
                goods_total=body.goodsTotal, order_total=body.orderTotal.amount, idempotency_key=key,
            )
    except service.IdempotencyKeyReused as exc:
        raise Unprocessable("this Idempotency-Key was used for a different order", field="Idempotency-Key") from exc
    if command is not None:
        # After the commit: a crash here leaves the command in the outbox for the sweep.
        crash_point("order-api.after-commit")
        publish_after_commit(relay_for(_db(), schema.outbox), [command["id"]])
        state = "PENDING"
    else:  # an Idempotency-Key replay: answer with the order as it is now
        row = service.find_order(_db(), order_id)
        state = row.state if row is not None else "PENDING"
    return json_response({"orderId": order_id, "state": state}, 202, {"Location": f"/orders/{order_id}"})


def _list_orders(request: Request) -> Any:
    principal = authenticate(request)
    wanted = request.args.get("customerId")
    if wanted is not None and not CUSTOMER_ID.fullmatch(wanted):
        raise Unprocessable("customerId must be 1-64 letters, digits, _ or -", field="customerId")
    if not principal.is_admin:
        wanted = principal.customer_id
        if wanted is None:
            return json_response([])
    limit = _int_arg(request, "limit", default=100, low=1, high=1000)
    with _db().connect() as tx:
        return json_response(service.list_orders(tx, customer_id=wanted, limit=limit))


def _owned_order(principal: Principal, order_id: str, wait: float = 0.0) -> Any:
    if not ORDER_ID.fullmatch(order_id):  # order ids are UUIDs: anything else cannot exist
        raise NotFound(f"order {order_id} does not exist")
    row = service.find_order(_db(), order_id, wait=wait)
    if row is None:
        raise NotFound(f"order {order_id} does not exist")
    require_customer_access(principal, row.customer_id)
    return row


def _get_order(request: Request, order_id: str) -> Any:
    principal = authenticate(request)
    wait = _int_arg(request, "wait", default=0, low=0, high=int(service.MAX_WAIT_SECONDS))
    if wait:
        _owned_order(principal, order_id)  # check access before holding the request
    return json_response(service.order_view(_owned_order(principal, order_id, float(wait))))


def _get_saga(request: Request, order_id: str) -> Any:
    _owned_order(authenticate(request), order_id)
    with _db().connect() as tx:
        found = service.store.describe(tx, order_id)
    if found is None:
        raise NotFound(f"no saga for order {order_id}")
    return json_response(found)


def _int_arg(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise Unprocessable(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(raw)


_router = Router(
    [
        ("/orders", ["POST"], _place_order),
        ("/orders", ["GET"], _list_orders),
        ("/orders/<order_id>", ["GET"], _get_order),
        ("/orders/<order_id>/saga", ["GET"], _get_saga),
    ]
)


@functions_framework.http
@json_api
def order_api(request: Request) -> Any:
    return _router.dispatch(request)


@functions_framework.http
def order_saga_step(request: Request) -> ResponseTuple:
    """One reply in, the saga advanced by one transition, its next command out as the HTTP reply.
    The command is stored with the inbox row, so a redelivered reply re-sends the same command."""
    return serve(request, engine=_db(), inbox=schema.inbox, consumer="order-saga",
                 handle=service.saga_engine.handle_reply)


outbox_relay = functions_framework.http(sweep_target(_db, schema.outbox))


@functions_framework.http
def saga_timeouts(request: Request) -> Any:
    """PingSource target: time out sagas whose participant has not answered by the step deadline.
    Answers 202 with no body (a body that is not a CloudEvent would count as a failed delivery)."""
    queued = service.expire_overdue(_db())
    if queued:
        log.info("timed out or re-sent %d overdue saga step(s)", len(queued))
        publish_after_commit(relay_for(_db(), schema.outbox), queued)
    return "", 202

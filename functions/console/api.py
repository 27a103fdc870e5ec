"""console (functions-framework target `console`): the operator console. Its page and the files the
page loads are public and carry no data (`/console/`, `/console/static/...`); the login form is passed
to the auth function (`/console/auth/login`, `/console/auth/refresh`); everything else is JSON under
`/console/api/`, for admins only (a Bearer token, verified as every function verifies it):

    GET  /console/api/sagas?type&state&customer&olderThan&newerThan&limit   counts, who needs a person, the list
    GET  /console/api/sagas/{id}                     every saga over the id: state, timeline, definition
    POST /console/api/sagas/{id}/resume[?type=]      what `saga resume` does
    GET  /console/api/dead-letters                   what a redrive would take now, with the errors
    POST /console/api/dead-letters/redrive           {"trigger": name | null}: `saga replay --dead-letters`

Thin edges: the reads are functions.console.queries and saga.store, resuming is
functions.order.service.resume_saga and redriving saga.replay's, the same code as the CLIs."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from functions_framework import aio
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from functions.console import assets, dead_letters, queries, signin
from functions.console.config import console_settings
from functions.console.timeline import lanes_of, timeline
from functions.order import resumption, service
from functions.platform.config import settings
from functions.platform.database import database
from functions.platform.ids import CUSTOMER_ID, ORDER_ID
from functions.platform.params import choice_param, int_param
from functions.platform.problems import (
    NotFound,
    ServiceUnavailable,
    Unprocessable,
    json_api,
    json_body,
    json_response,
)
from functions.platform.routing import Router
from functions.platform.security import Principal, authenticate, require_admin
from saga.docs import outline
from saga.engine import SagaState
from saga.transaction import Database

log = logging.getLogger(__name__)



class Redrive(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trigger: Annotated[str | None, Field(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")] = None


def _db() -> Database:
    return database(settings().database_url)


async def _admin(request: Request) -> Principal:
    principal = await authenticate(request)
    require_admin(principal)
    return principal


# --- the page ---
async def _to_page(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


async def _page(request: Request) -> Response:
    return assets.serve(request, "index.html")


async def _asset(request: Request, name: str) -> Response:
    return assets.serve(request, name)


# --- sagas ---
async def _overview(request: Request) -> Response:
    await _admin(request)
    filters = queries.Filters(
        saga_type=choice_param(request, "type", sorted(service.engines)),
        state=choice_param(request, "state", list(SagaState)),
        customer=_customer(request),
        older_than=_seconds(request, "olderThan"),
        newer_than=_seconds(request, "newerThan"),
        limit=int_param(request, "limit", default=100, low=1, high=500),
    )
    found = await _db().call(_db().autocommit, lambda tx: queries.overview(tx, filters))
    found.update(types=sorted(service.engines), states=list(SagaState),
                 refreshSeconds=console_settings().refresh_seconds)
    return json_response(found)


async def _saga(request: Request, saga_id: str) -> Response:
    await _admin(request)
    if not ORDER_ID.fullmatch(saga_id):  # saga ids are order ids, UUIDs: anything else cannot exist
        raise NotFound(f"no saga {saga_id}")

    def read(tx: Any) -> tuple[list[dict[str, Any]], Any]:
        return service.store.describe(tx, saga_id), service.find_order(tx, saga_id)

    sagas, order = await _db().call(_db().autocommit, read)
    if not sagas:
        raise NotFound(f"no saga {saga_id}")
    now = datetime.now(UTC)
    return json_response({
        "sagaId": saga_id,
        "order": service.order_view(order) if order is not None else None,
        "sagas": [_drawn(saga, now) for saga in sagas],
        "refreshSeconds": console_settings().refresh_seconds,
    })


def _drawn(saga: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A saga as the page draws it: its timeline beside its definition's outline, and its trace."""
    engine = service.engines.get(saga["sagaType"])
    definition = engine.definitions.get(saga["definitionVersion"]) if engine is not None else None
    lanes = lanes_of(definition.steps) if definition is not None else _lanes_from(saga["history"])
    trace_id, trace_ui = saga.get("traceId"), console_settings().trace_ui_url  # kept with the instance
    deadline = datetime.fromisoformat(saga["deadline"]) if saga["deadline"] else None
    return {
        **{key: value for key, value in saga.items() if key != "history"},
        "stuck": not saga["finished"] and deadline is not None and deadline < now,
        "timeline": timeline(saga["history"], lanes, now=now, finished=saga["finished"]),
        "definition": outline(definition) if definition is not None else None,
        "traceUrl": _trace_link(trace_ui, trace_id) if trace_id and trace_ui else None,
    }


def _trace_link(viewer: str, trace_id: str) -> str:
    """Jaeger's UI path, or the viewer's own where SAGA_TRACE_UI_URL says it (`.../traces/{traceId}`)."""
    return viewer.replace("{traceId}", trace_id) if "{traceId}" in viewer else f"{viewer}/trace/{trace_id}"


def _lanes_from(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lanes when the definition version is not in this build: the steps the history names."""
    names: dict[int, str] = {}
    for entry in history:
        if entry["event"] in ("LOCAL_DONE", "COMMAND_SENT"):
            names.setdefault(entry["step"], entry["name"])
    return [{"step": step, "name": names.get(step, f"step {step}"), "compensation": None}
            for step in range(max(names, default=-1) + 1)]


async def _resume(request: Request, saga_id: str) -> Response:
    """`saga resume` / `POST /admin/sagas/{id}/resume`: the same `resume_saga`, the same refusals."""
    principal = await _admin(request)
    saga_type = choice_param(request, "type", sorted(service.engines))
    command = await resumption.resume(_db(), saga_id, by=principal.user_id, saga_type=saga_type)
    log.info("saga %s (%s) resumed by %s", saga_id, command["sagatype"], principal.user_id)
    return json_response({"sagaId": saga_id, "sagaType": command["sagatype"], "queued": command["type"],
                          "commandId": command["id"]})


# --- dead letters ---
async def _dead_letters(request: Request) -> Response:
    await _admin(request)
    return json_response(await _with_routing(dead_letters.parked))


async def _redrive(request: Request) -> Response:
    principal = await _admin(request)
    wanted = Redrive.model_validate(await json_body(request)).trigger

    def redrive(routing: Any) -> dict[str, Any]:
        if wanted is not None and wanted not in dead_letters.names(routing):
            raise Unprocessable(f"trigger must be one of {', '.join(dead_letters.names(routing))}", field="trigger")
        return dead_letters.redrive(routing, wanted)

    report = await _with_routing(redrive)
    log.info("dead letters redriven by %s (trigger %s): %s", principal.user_id, wanted or "all", report["total"])
    return json_response(report)


@functools.cache
def _routing() -> dead_letters.Routing:
    return dead_letters.Routing(console_settings())


async def _with_routing(work: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """`work(routing)` off the event loop (Kafka's and the replay's clients block)."""
    def run() -> dict[str, Any]:
        with dead_letters.reaching("the broker's dead letters"):
            return work(_routing().get())

    try:
        return await asyncio.to_thread(run)
    except dead_letters.Unreachable as exc:
        log.warning("dead letters unavailable: %s", exc)
        raise ServiceUnavailable(f"the dead letters cannot be read right now: {exc}") from exc


# --- query arguments ---
def _customer(request: Request) -> str | None:
    value = request.query_params.get("customer")
    if value is not None and not CUSTOMER_ID.fullmatch(value):
        raise Unprocessable("customer must be 1-64 letters, digits, _ or -", field="customer")
    return value


def _seconds(request: Request, name: str) -> float | None:
    return None if request.query_params.get(name) is None else int_param(request, name, default=0, low=0, high=10**8)


_router = Router(
    [
        ("/", ["GET"], _to_page),
        ("/console/", ["GET"], _page),  # before /console, whose pattern takes a trailing slash too
        ("/console", ["GET"], _to_page),
        ("/console/static/<name>", ["GET"], _asset),
        ("/console/auth/login", ["POST"], signin.forward_to("/auth/login")),
        ("/console/auth/refresh", ["POST"], signin.forward_to("/auth/refresh")),
        ("/console/api/sagas", ["GET"], _overview),
        ("/console/api/sagas/<saga_id>", ["GET"], _saga),
        ("/console/api/sagas/<saga_id>/resume", ["POST"], _resume),
        ("/console/api/dead-letters", ["GET"], _dead_letters),
        ("/console/api/dead-letters/redrive", ["POST"], _redrive),
    ]
)


@aio.http
async def console(request: Request) -> Response:
    response = await _answer(request)
    response.headers.update(assets.SECURITY_HEADERS)
    if request.url.path.startswith("/console/api/"):
        response.headers["Cache-Control"] = "no-store"
    return response


@json_api
async def _answer(request: Request) -> Response:
    return await _router.dispatch(request)

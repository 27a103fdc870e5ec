"""RFC 9457 problem+json: the API errors and the one decorator that turns every failure of an
HTTP function into a problem response. No stack trace, SQL or key material ever reaches a client."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from saga.errors import TransientFailure

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"


class ApiError(Exception):
    status = 500
    title = "Internal Server Error"

    def __init__(self, detail: str, *, field: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = dict(headers or {})


class BadRequest(ApiError):
    status, title = 400, "Bad Request"


class Unauthorized(ApiError):
    status, title = 401, "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="knative-saga"'})


class Forbidden(ApiError):
    status, title = 403, "Forbidden"


class NotFound(ApiError):
    status, title = 404, "Not Found"


class MethodNotAllowed(ApiError):
    status, title = 405, "Method Not Allowed"

    def __init__(self, detail: str, allowed: list[str]) -> None:
        super().__init__(detail, headers={"Allow": ", ".join(sorted(allowed))})


class Conflict(ApiError):
    status, title = 409, "Conflict"


class Unprocessable(ApiError):
    status, title = 422, "Unprocessable Content"


class TooManyRequests(ApiError):
    status, title = 429, "Too Many Requests"


class ServiceUnavailable(ApiError):
    status, title = 503, "Service Unavailable"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, headers=dict(headers or {}), media_type="application/json")


def problem_response(
    status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(json.dumps(body), status_code=status, headers=dict(headers or {}), media_type=PROBLEM)


async def json_body(request: Request, *, parse_float: Callable[[str], Any] = float) -> Any:
    """The request's JSON body; 400 when it is not JSON."""
    try:
        return json.loads(await request.body(), parse_float=parse_float)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not valid JSON") from exc


def _validation_problem(error: ValidationError) -> Response:
    errors = [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in error.errors(include_url=False)
    ]
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][-1]) if first["loc"] else "body"
    return problem_response(
        422, "Unprocessable Content", f"{errors[0]['field']}: {first['msg']}", field=field, errors=errors
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def json_api(function: Endpoint) -> Endpoint:
    """Wrap an http function: every exception becomes a problem+json response."""

    @functools.wraps(function)
    async def wrapper(request: Request) -> Response:
        try:
            return await function(request)
        except ApiError as exc:
            return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, field=exc.field)
        except ValidationError as exc:
            return _validation_problem(exc)
        except psycopg.errors.DataError:
            # A value PostgreSQL refuses (out of range, NUL in text) that validation let through.
            log.warning("value refused by the database", exc_info=True)
            return problem_response(400, "Bad Request", "a value in the request is out of range or malformed")
        except (TransientFailure, psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout):
            log.warning("transient failure", exc_info=True)
            return problem_response(503, "Service Unavailable", "try again shortly", headers={"Retry-After": "1"})
        except Exception:
            log.exception("unhandled error")
            return problem_response(500, "Internal Server Error", "the request could not be completed")

    return wrapper

"""Signing in to the console: its form posts to `/console/auth/login` (and `/console/auth/refresh`), passed
to the auth function as it came, so the page talks to its own origin only (one host in a cluster, one port
per function locally) and needs no CORS. docs/console.md, "Signing in"."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from starlette.requests import Request
from starlette.responses import Response

from functions.console.config import console_settings
from functions.platform.problems import BadRequest, ServiceUnavailable

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024  # a login or refresh request is small; the auth function checks the rest
AUTH_TIMEOUT_SECONDS = 30  # a cold start of the auth function included
KEPT_HEADERS = ("Retry-After", "WWW-Authenticate")  # of the auth function's answer, besides its body


@functools.cache
def _client() -> aiohttp.ClientSession:
    """One session per process, made on the first sign-in (inside the running loop), never at import."""
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=AUTH_TIMEOUT_SECONDS))


def forward_to(path: str) -> Callable[[Request], Awaitable[Response]]:
    """POST the page's form to the auth function's `path` as it came, and its answer back as it is. The
    caller's X-Forwarded-For goes along unchanged, so the auth function's per-address login limit sees the
    address our ingress appended, as for a login sent to it directly."""

    async def forward(request: Request) -> Response:
        declared = request.headers.get("Content-Length", "0")
        if not declared.isdigit() or int(declared) > MAX_BODY:
            raise BadRequest("the request is too large")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise BadRequest("the request is too large")
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        if "X-Forwarded-For" in request.headers:
            headers["X-Forwarded-For"] = request.headers["X-Forwarded-For"]
        try:
            async with _client().post(f"{console_settings().auth_url}{path}", data=body, headers=headers) as answer:
                text = await answer.read()
                kept = {name: answer.headers[name] for name in KEPT_HEADERS if name in answer.headers}
                return Response(text, status_code=answer.status, headers={**kept, "Cache-Control": "no-store"},
                                media_type=answer.headers.get("Content-Type", "application/json"))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("the auth function did not answer: %s", exc)
            raise ServiceUnavailable("the sign-in service is not answering; try again shortly") from exc

    return forward

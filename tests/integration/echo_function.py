"""A function for the activator's tests (functions-framework target `echo`): says which process
answered and whether a proxy stood in between (the activator appends X-Forwarded-For)."""

from __future__ import annotations

import json
import os

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response


@aio.http
async def echo(request: Request) -> Response:
    body = {"pid": os.getpid(), "proxied": "x-forwarded-for" in request.headers}
    return Response(json.dumps(body), media_type="application/json")

"""Path dispatch for an HTTP function: `/orders/<order_id>` and `/goods/<int:goods_id>` patterns,
a trailing slash tolerated, 404 and 405 as problems."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.platform.problems import MethodNotAllowed, NotFound

Handler = Callable[..., Awaitable[Response]]
_PARAMETER = re.compile(r"<(?:(int):)?([a-z_]+)>")


class Router:
    def __init__(self, routes: Sequence[tuple[str, Sequence[str], Handler]]) -> None:
        self._routes = []
        for path, methods, handler in routes:
            pieces = _PARAMETER.split(path)  # literal, kind, name, literal, kind, name, literal...
            pattern = "".join(
                re.escape(piece) if index % 3 == 0 else
                (f"(?P<{pieces[index + 1]}>{'[0-9]+' if piece else '[^/]+'})" if index % 3 == 1 else "")
                for index, piece in enumerate(pieces)
            )
            converters = {m[2]: int for m in _PARAMETER.finditer(path) if m[1]}
            self._routes.append((re.compile(f"{pattern}/?"), set(methods), handler, converters))

    async def dispatch(self, request: Request) -> Response:
        path, allowed = request.url.path, set()
        for pattern, methods, handler, converters in self._routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            if request.method not in methods:
                allowed |= methods
                continue
            values: dict[str, Any] = {k: converters.get(k, str)(v) for k, v in match.groupdict().items()}
            return await handler(request, **values)
        if allowed:
            raise MethodNotAllowed(f"{request.method} is not allowed here", sorted(allowed))
        raise NotFound(f"no resource at {path}")

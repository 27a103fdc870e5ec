"""Path dispatch for an HTTP function, on werkzeug's router (Flask's own)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Request
from werkzeug.exceptions import MethodNotAllowed as WerkzeugMethodNotAllowed
from werkzeug.exceptions import NotFound as WerkzeugNotFound
from werkzeug.routing import Map, Rule

from functions.platform.problems import MethodNotAllowed, NotFound

Handler = Callable[..., Any]


class Router:
    def __init__(self, routes: Sequence[tuple[str, Sequence[str], Handler]]) -> None:
        self._handlers: dict[str, Handler] = {}
        rules = []
        for index, (path, methods, handler) in enumerate(routes):
            endpoint = f"{index}:{handler.__name__}"
            self._handlers[endpoint] = handler
            rules.append(Rule(path, methods=list(methods), endpoint=endpoint, strict_slashes=False))
        self._map = Map(rules)

    def dispatch(self, request: Request) -> Any:
        adapter = self._map.bind("", path_info=request.path, url_scheme="http")
        try:
            endpoint, values = adapter.match(method=request.method)
        except WerkzeugNotFound as exc:
            raise NotFound(f"no resource at {request.path}") from exc
        except WerkzeugMethodNotAllowed as exc:
            raise MethodNotAllowed(f"{request.method} is not allowed here", list(exc.valid_methods or [])) from exc
        return self._handlers[str(endpoint)](request, **values)

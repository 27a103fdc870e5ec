"""Requests a function has started and finished, counted in a small shared file for the local
stack's autoscaler: the activator is off the path of a running function, so it cannot count them
itself. Knative's autoscaler learns the same from queue-proxy, the sidecar in front of every pod.

The function runtime (functions/platform/serve.py) writes it when `SAGA_ACTIVITY_FILE` names one (the
local stack sets it; a cluster does not); the activator (localstack/gateway.py) reads it."""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

_COUNTS = struct.Struct("<QQ")  # requests started, requests finished
ENV = "SAGA_ACTIVITY_FILE"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Counts:
    """The shared counts; both sides map the same file."""

    def __init__(self, path: Path) -> None:
        with open(path, "a+b") as file:
            if os.fstat(file.fileno()).st_size < _COUNTS.size:
                file.truncate(_COUNTS.size)
            self._map = mmap.mmap(file.fileno(), _COUNTS.size)

    def read(self) -> tuple[int, int]:
        started, finished = _COUNTS.unpack_from(self._map)
        return started, finished

    def write(self, started: int, finished: int) -> None:
        _COUNTS.pack_into(self._map, 0, started, finished)

    def close(self) -> None:
        self._map.close()


def counted(app: ASGIApp, counts: Counts) -> ASGIApp:
    """`app`, counting its HTTP requests into `counts` (on the event loop: one writer)."""
    started = finished = 0
    counts.write(0, 0)

    async def count(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal started, finished
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started += 1
        counts.write(started, finished)
        try:
            await app(scope, receive, send)
        finally:
            finished += 1
            counts.write(started, finished)

    return count

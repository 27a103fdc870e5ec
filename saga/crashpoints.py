"""Named crash points for fault-injection tests: a process started with SAGA_CRASH_POINTS naming a
point dies there at once (os._exit, no cleanup), as SIGKILL would leave it. Inert unless set."""

from __future__ import annotations

import os

_ACTIVE = frozenset(name for name in os.environ.get("SAGA_CRASH_POINTS", "").split(",") if name)


def crash_point(name: str) -> None:
    if name in _ACTIVE:
        os._exit(137)

"""The console's own settings, from the environment, read once per process (the shared ones, the
database and the JWT checks, come from functions.platform.config)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

# Where the local stack writes its routing, as `saga replay` reads it (`--topology`'s default).
DEV_TOPOLOGY = Path(".local/dev/topology.json")


@dataclass(frozen=True)
class ConsoleSettings:
    auth_url: str  # the auth function, which the login form's POST is forwarded to
    trace_ui_url: str | None  # the trace viewer: <url>/trace/<traceId>, or a URL holding {traceId}; None: off
    # The broker's routing for the dead letters, as `saga replay` takes it: a file written by the local
    # stack, or, in a cluster, the Broker read from the Kubernetes API with this Kafka bootstrap.
    replay_topology: Path | None
    replay_broker: str | None  # NAMESPACE/NAME
    kafka_bootstrap: str | None
    refresh_seconds: float  # how often an open page asks again (live refresh)


@functools.cache
def console_settings() -> ConsoleSettings:
    env = os.environ.get
    topology = env("SAGA_REPLAY_TOPOLOGY")
    in_cluster = bool(env("KUBERNETES_SERVICE_HOST"))
    return ConsoleSettings(
        auth_url=env("SAGA_AUTH_URL", "http://127.0.0.1:8083").rstrip("/"),
        trace_ui_url=(env("SAGA_TRACE_UI_URL") or "").rstrip("/") or None,
        # A file given wins (the local stack sets it); outside a cluster without one, the dev stack's.
        replay_topology=Path(topology) if topology else (None if in_cluster else DEV_TOPOLOGY),
        replay_broker=env("SAGA_REPLAY_BROKER") or None,
        kafka_bootstrap=env("KAFKA_BOOTSTRAP_SERVERS") or None,
        refresh_seconds=float(env("SAGA_CONSOLE_REFRESH_SECONDS", "2")),
    )

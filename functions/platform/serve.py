"""Serve one function: functions-framework loads it (`FUNCTION_SOURCE`, `FUNCTION_TARGET`) into its
ASGI app, and uvicorn serves that app in this one process, on `PORT` or on the socket it was handed
(systemd socket activation: `LISTEN_FDS`, `LISTEN_PID`; the local stack's activator hands over a
Service's port this way).

Why not functions-framework's own command: its ASGI mode runs gunicorn's master in front of one
uvicorn worker. In a pod, Kubernetes already supervises the process, so the master only doubles the
memory (89 MiB against 49 for an event function) and adds a fork to every cold start
(`python -m bench.micro serving`, docs/performance.md).

    python -m functions.platform.serve --source functions/goods/reserve.py --target goods_reserve --port 8080
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Any

import click

SD_LISTEN_FDS_START = 3  # systemd's first passed socket


def handed_socket() -> int | None:
    """The listening socket passed by socket activation, if this process is the one it was passed to."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and int(os.environ.get("LISTEN_FDS", "0")) >= 1:
        for name in ("LISTEN_PID", "LISTEN_FDS"):
            del os.environ[name]  # not for any process this one starts
        return SD_LISTEN_FDS_START
    return None


METRICS_PATH = "/metrics"


def with_metrics(app: Any) -> Any:
    """`app`, with this process's Prometheus metrics (`saga.metrics`) answered on GET /metrics. In a cluster
    they are scraped inside the pod (Istio merges them into its agent's scrape, docs/deploy.md), never
    through the Gateway, which routes only the contract's paths; locally, on the function's own port."""
    from prometheus_client import make_asgi_app

    metrics_app = make_asgi_app()

    async def app_with_metrics(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == METRICS_PATH:
            await metrics_app(scope, receive, send)
        else:
            await app(scope, receive, send)

    return app_with_metrics


def function_app(source: str, target: str) -> Any:
    """functions-framework's ASGI app for the function, its catch-all route matching every path.
    That route is `/{path:path}`, whose `.*` stops at a newline: a path with an encoded one (`%0A`)
    got Starlette's plain-text 404 instead of reaching the function, which answers problem+json."""
    from functions_framework.aio import create_asgi_app
    from starlette.routing import Route

    app = create_asgi_app(target, source)
    for route in app.routes:
        if isinstance(route, Route) and route.path.endswith("{path:path}"):
            route.path_regex = re.compile(route.path_regex.pattern, re.DOTALL)
    return app


@click.command()
@click.option("--source", envvar="FUNCTION_SOURCE", required=True, help="the file that defines the function")
@click.option("--target", envvar="FUNCTION_TARGET", required=True, help="the function's name")
@click.option("--host", envvar="HOST", default="0.0.0.0", show_default=True)
@click.option("--port", envvar="PORT", type=int, default=8080, show_default=True)
def main(source: str, target: str, host: str, port: int) -> None:
    """Serve one functions-framework function (ASGI) with uvicorn, in this process."""
    import uvicorn

    from functions.platform import activity
    from saga.tracing import traced

    app = traced(function_app(source, target))
    counts_file = os.environ.get(activity.ENV)
    if counts_file:  # the local stack's autoscaler counts requests here (queue-proxy does in a cluster)
        app = activity.counted(app, activity.Counts(Path(counts_file)))
    app = with_metrics(app)  # outside the count: a scrape does not keep a function from scaling to zero
    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="off", log_level="warning",
        # The function decides which X-Forwarded-For entry to trust (functions/auth/api.py); uvicorn's
        # default would take it from any caller on 127.0.0.1, where queue-proxy and local callers are.
        proxy_headers=False,
        # Idle keep-alive connections close after 2 s; the local stack's clients let them go after 1 s.
        timeout_keep_alive=2,
    )
    handed = handed_socket()
    # A handed socket is wrapped here, as what it is: uvicorn's own `fd` option takes any descriptor
    # for a UNIX socket, and a TCP one served that way gets no TCP_NODELAY: 40 ms more per answer.
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=handed)] if handed is not None else None)


if __name__ == "__main__":
    main()

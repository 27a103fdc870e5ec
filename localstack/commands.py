"""`saga dev`: the whole local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import nullcontext

import click

from localstack.infra import dev_infra, repo_root
from localstack.stack import Stack
from localstack.zipkin import ZipkinServer


@click.command("dev")
@click.option("--idle-seconds", default=60.0, show_default=True, help="Stop a function after this long idle.")
@click.option("--keep-warm", is_flag=True, help="Start every function now and never scale to zero (benchmarks).")
@click.option("--port-offset", default=0, show_default=True, help="Add this to every port.")
@click.option("--ping-every", type=float, default=None, help="Fire PingSources this often (seconds) instead of cron.")
@click.option("--tracing", is_flag=True,
              help="Also run Zipkin (downloaded on first use: ~135 MB) and send every function's traces to it.")
def dev(idle_seconds: float, keep_warm: bool, port_offset: int, ping_every: float | None, tracing: bool) -> None:
    """Start Kafka, PostgreSQL and every function: the whole local stack."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    stop = threading.Event()
    # Explicit handlers: a shell that starts us in the background may have set SIGINT to "ignore".
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    repo = repo_root()
    root = repo / ".local" / "dev"
    # Zipkin first and stopped last: it takes the functions' spans from their first request to their last.
    with (
        (ZipkinServer(repo, root, port_offset=port_offset) if tracing else nullcontext()) as zipkin,
        dev_infra(repo) as infra,
        Stack(
            repo, root, infra, port_offset=port_offset, idle_seconds=idle_seconds,
            keep_warm=keep_warm, ping_every=ping_every,
            env=_tracing_env(zipkin) if zipkin is not None else None,
        ) as stack,
    ):
        click.echo("\nknative-saga is up:")
        for name, url in stack.public_urls.items():
            click.echo(f"  {name:8} {url}")
        click.echo(f"  {'broker':8} {stack.ingress_url}  (K_SINK)")
        click.echo(f"  {'kafka':8} {infra.kafka_bootstrap}\n  {'postgres':8} {infra.database_url}")
        if zipkin is not None:
            click.echo(f"  {'zipkin':8} {zipkin.ui_url}  (a trace: {zipkin.trace_url_template})")
        password = os.environ.get("SAGA_DEMO_PASSWORD", "lisa-password-dev")
        click.echo(
            "\nGet a token for the demo customer lisa (12223):\n"
            f"  curl -s {stack.public_urls['auth']}/auth/login -H 'Content-Type: application/json' "
            f"-d '{{\"username\":\"lisa\",\"password\":\"{password}\"}}'\n"
            f"\nLogs: {repo / '.local' / 'dev' / 'logs'}   Ctrl-C stops everything.\n"
        )
        stop.wait()
        click.echo("stopping...")


def _tracing_env(zipkin: ZipkinServer) -> dict[str, str]:
    """Every function exports its spans to Zipkin's JSON API (`saga/tracing.py`), and the console links a
    saga to its trace's page (a URL holding `{traceId}`, which the console fills in)."""
    return {"OTEL_EXPORTER_ZIPKIN_ENDPOINT": zipkin.spans_endpoint, "SAGA_TRACE_UI_URL": zipkin.trace_url_template}

"""`saga dev`: the whole local stack in the foreground until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import threading

import click

from localstack.infra import dev_infra, repo_root
from localstack.stack import Stack


@click.command("dev")
@click.option("--idle-seconds", default=60.0, show_default=True, help="Stop a function after this long idle.")
@click.option("--keep-warm", is_flag=True, help="Start every function now and never scale to zero (benchmarks).")
@click.option("--port-offset", default=0, show_default=True, help="Add this to every port.")
@click.option("--ping-every", type=float, default=None, help="Fire PingSources this often (seconds) instead of cron.")
def dev(idle_seconds: float, keep_warm: bool, port_offset: int, ping_every: float | None) -> None:
    """Start Kafka, PostgreSQL and every function: the whole local stack."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    stop = threading.Event()
    # Explicit handlers: a shell that starts us in the background may have set SIGINT to "ignore".
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    repo = repo_root()
    with dev_infra(repo) as infra, Stack(
        repo, repo / ".local" / "dev", infra, port_offset=port_offset, idle_seconds=idle_seconds,
        keep_warm=keep_warm, ping_every=ping_every,
    ) as stack:
        click.echo("\nknative-saga is up:")
        for name, url in stack.public_urls.items():
            click.echo(f"  {name:8} {url}")
        click.echo(f"  {'broker':8} {stack.ingress_url}  (K_SINK)")
        click.echo(f"  {'kafka':8} {infra.kafka_bootstrap}\n  {'postgres':8} {infra.database_url}")
        password = os.environ.get("SAGA_DEMO_PASSWORD", "lisa-password-dev")
        click.echo(
            "\nGet a token for the demo customer lisa (12223):\n"
            f"  curl -s {stack.public_urls['auth']}/auth/login -H 'Content-Type: application/json' "
            f"-d '{{\"username\":\"lisa\",\"password\":\"{password}\"}}'\n"
            f"\nLogs: {repo / '.local' / 'dev' / 'logs'}   Ctrl-C stops everything.\n"
        )
        stop.wait()
        click.echo("stopping...")

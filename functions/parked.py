"""`saga parked`: the events a service's broker ingress refused for good (`saga.outbox`, moved to
`<schema>.outbox_parked` so they hold back nothing), one JSON object a line, for an operator to read
before fixing the cause. Nothing republishes them."""

from __future__ import annotations

import json

import click
import psycopg

from functions.platform.config import settings
from functions.platform.database import postgres_url
from saga import outbox as outbox_
from saga.outbox import Outbox
from saga.transaction import Tx

SCHEMAS = ("orders", "auth")  # the services with an outbox (their schema modules declare outbox_parked)
CONNECT_TIMEOUT_SECONDS = 5


@click.command("parked")
@click.option("--database-url", default=lambda: settings().database_url,
              show_default="$DATABASE_URL, else the dev stack's")
@click.option("--schema", "schemas", type=click.Choice(SCHEMAS), multiple=True,
              help="Only this service's outbox (repeatable); default: every one in the database.")
def parked(database_url: str, schemas: tuple[str, ...]) -> None:
    """List the outbox events the broker refused for good, oldest first within each service."""
    try:
        with psycopg.connect(postgres_url(database_url), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            found = 0
            for schema in schemas or SCHEMAS:
                try:
                    rows = outbox_.parked(Tx(connection), Outbox(f"{schema}.outbox"))
                except psycopg.errors.UndefinedTable:
                    # In the cluster a service may have a database of its own: say what was not there.
                    click.echo(f"no {schema}.outbox_parked in this database", err=True)
                    continue
                found += 1
                for row in rows:
                    click.echo(json.dumps({
                        "schema": schema, "eventId": row.event_id, "parkedAt": row.parked_at.isoformat(),
                        "status": row.status, "reason": row.reason, "type": row.event.get("type"),
                        "event": row.event,
                    }))
    except psycopg.Error as exc:
        raise click.ClickException(f"the database could not be read: {exc}") from exc
    if not found:
        raise click.ClickException("none of the services' parked tables is in this database (saga db-init?)")

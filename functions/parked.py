"""`saga parked`: the events a service's broker ingress refused for good (`saga.outbox`, moved to
`<schema>.outbox_parked` so they hold back nothing), one JSON object a line, for an operator to read
before fixing the cause. Nothing republishes them."""

from __future__ import annotations

import functools
import json

import click
import psycopg

from functions.platform.config import settings
from functions.platform.database import postgres_url
from saga import outbox as outbox_
from saga.outbox import Outbox
from saga.transaction import Database

SCHEMAS = ("orders", "auth")  # the services with an outbox


@click.command("parked")
@click.option("--database-url", default=lambda: settings().database_url,
              show_default="$DATABASE_URL, else the dev stack's")
@click.option("--schema", "schemas", type=click.Choice(SCHEMAS), multiple=True,
              help="Only this service's outbox (repeatable); default: every one in the database.")
def parked(database_url: str, schemas: tuple[str, ...]) -> None:
    """List the outbox events the broker refused for good, oldest first."""
    database = Database(postgres_url(database_url), 1)
    try:
        for schema in schemas or SCHEMAS:
            try:
                rows = database.autocommit(functools.partial(outbox_.parked, outbox=Outbox(f"{schema}.outbox")))
            except psycopg.errors.UndefinedTable:
                if schemas:
                    raise click.ClickException(f"no {schema}.outbox_parked in this database") from None
                continue  # a service whose tables live in another database
            for row in rows:
                click.echo(json.dumps({
                    "schema": schema, "eventId": row.event_id, "parkedAt": row.parked_at.isoformat(),
                    "status": row.status, "reason": row.reason, "type": row.event.get("type"), "event": row.event,
                }))
    finally:
        database.close()

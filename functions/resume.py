"""`saga resume ORDER_ID`: take a PARKED order saga up again once its cause is fixed, as
`POST /admin/sagas/{id}/resume` does (the same `functions.order.service.resume_saga`): its step is
sent again with a fresh retry budget. The command is committed to the order outbox with the saga's
change; the outbox relay publishes it on its next sweep (a minute at most in the cluster)."""

from __future__ import annotations

import json

import click
import psycopg

from functions.platform.config import settings
from functions.platform.database import postgres_url
from functions.platform.ids import ORDER_ID
from saga.errors import InvalidMessage, NotParked, UnknownDefinition, UnknownSaga
from saga.transaction import Tx

CONNECT_TIMEOUT_SECONDS = 5


@click.command("resume")
@click.argument("order_id")
@click.option("--database-url", default=lambda: settings().database_url,
              show_default="$DATABASE_URL, else the dev stack's")
@click.option("--by", default="cli", show_default=True, help="Who resumes it (kept in the saga's history).")
@click.option("--type", "saga_type", default=None,
              help="The saga type (CreateOrderSaga, CancelOrderSaga); default: the one parked over ORDER_ID.")
def resume(order_id: str, database_url: str, by: str, saga_type: str | None) -> None:
    """Resume the PARKED saga of ORDER_ID."""
    if not ORDER_ID.fullmatch(order_id):
        raise click.BadParameter("an order id is a UUID", param_hint="ORDER_ID")
    from functions.order import service  # builds the order saga's engine: only when a saga is resumed

    try:
        with psycopg.connect(postgres_url(database_url), connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            with connection.transaction():
                command = service.resume_saga(Tx(connection), order_id, by=by, saga_type=saga_type)
            with connection.transaction():
                found = {s["sagaType"]: s for s in service.store.describe(Tx(connection), order_id)}
    except UnknownSaga as exc:
        raise click.ClickException(f"no saga for order {order_id}") from exc
    except service.AmbiguousSaga as exc:
        raise click.ClickException(f"{exc} (--type)") from exc
    except NotParked as exc:
        raise click.ClickException(f"the saga is {exc.state}; only a PARKED saga can be resumed") from exc
    except InvalidMessage as exc:
        raise click.ClickException(f"not resumed: its data still does not decode ({exc})") from exc
    except UnknownDefinition as exc:
        raise click.ClickException(f"not resumed: {exc}") from exc
    except psycopg.OperationalError as exc:
        raise click.ClickException(f"the database could not be reached: {exc}") from exc
    except psycopg.Error as exc:
        raise click.ClickException(f"the database refused it: {exc}") from exc
    resumed = found[command["sagatype"]]
    click.echo(json.dumps({"sagaId": order_id, "sagaType": resumed["sagaType"], "state": resumed["state"],
                           "queued": command["type"], "commandId": command["id"]}))

"""`saga versions`: which definition version each saga type's unfinished sagas run on, and whether this
build still has it. A version may leave the code (the engine's `older`) only once nothing runs on it;
`--check` fails when something in flight would be stranded, for a deploy pipeline to run first."""

from __future__ import annotations

import json
from typing import Any

import click
import psycopg

from functions.platform.config import settings
from functions.platform.database import postgres_url
from saga.engine import SagaEngine

CONNECT_TIMEOUT_SECONDS = 5
IN_FLIGHT = ("SELECT saga_type, definition_version, count(*) FILTER (WHERE NOT finished) AS in_flight, "
             "count(*) FILTER (WHERE parked_reason IS NOT NULL) AS parked, "
             "min(created_at) FILTER (WHERE NOT finished) AS oldest, count(*) AS total "
             "FROM {table} GROUP BY 1, 2 ORDER BY 1, 2")


def _engines() -> dict[str, tuple[str, SagaEngine[Any]]]:
    """Every saga type this build runs: its name -> (its instances' table, its engine)."""
    from functions.order import service  # builds the order saga's engine: only when asked

    return {name: ("orders.saga_instances", engine) for name, engine in service.engines.items()}


@click.command("versions")
@click.option("--database-url", default=lambda: settings().database_url,
              show_default="$DATABASE_URL, else the dev stack's")
@click.option("--check", is_flag=True, help="Exit 1 if a version with sagas in flight is not in this build.")
def versions(database_url: str, check: bool) -> None:
    """One JSON line per saga type and definition version: sagas in flight, parked, the oldest one, and
    whether this build has that version."""
    engines = _engines()
    stranded = 0
    try:
        with psycopg.connect(postgres_url(database_url), autocommit=True,
                             connect_timeout=CONNECT_TIMEOUT_SECONDS) as connection:
            seen: set[tuple[str, int]] = set()
            for table in sorted({table for table, _ in engines.values()}):
                for row in connection.execute(IN_FLIGHT.format(table=table)).fetchall():
                    saga_type, version, in_flight, parked, oldest, total = row
                    engine = engines.get(saga_type)
                    known = engine is not None and version in engine[1].definitions
                    stranded += bool(in_flight) and not known
                    seen.add((saga_type, version))
                    click.echo(json.dumps({
                        "sagaType": saga_type, "version": version, "inFlight": in_flight, "parked": parked,
                        "oldestInFlight": oldest.isoformat() if oldest else None, "sagas": total,
                        "inThisBuild": known,
                    }))
            for name, (_, kept) in sorted(engines.items()):  # versions kept with nothing left on them
                for version in sorted(set(kept.definitions) - {v for t, v in seen if t == name}):
                    click.echo(json.dumps({"sagaType": name, "version": version, "inFlight": 0, "parked": 0,
                                           "oldestInFlight": None, "sagas": 0, "inThisBuild": True}))
    except psycopg.Error as exc:
        raise click.ClickException(f"the database could not be read: {exc}") from exc
    if check and stranded:
        raise click.ClickException(f"{stranded} version(s) with sagas in flight are not in this build")

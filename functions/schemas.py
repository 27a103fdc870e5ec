"""Every service's schema, created in one place: `saga db-init` (local stack, cluster Job)."""

from __future__ import annotations

import importlib
import os

import click
import sqlalchemy as sa

# Each module has `metadata` (its own PostgreSQL schema) and may have `seed_catalogue(conn)` (reference
# data any installation gets when asked), `seed_dev(conn)` (the dev stack's demo users and accounts)
# and `upgrade(conn)` (columns added to tables that already exist).
SERVICE_SCHEMAS = (
    "functions.order.schema",
    "functions.goods.schema",
    "functions.account.schema",
    "functions.auth.schema",
)


def init_databases(database_url: str, *, seed_dev: bool, seed_catalogue: bool = False) -> None:
    """Create schemas and tables that are missing (idempotent); with seed_dev, the dev demo data
    (which includes the catalogue); with seed_catalogue, the catalogue only."""
    from functions.platform.config import normalise_database_url

    db = sa.create_engine(normalise_database_url(database_url), poolclass=sa.pool.NullPool)
    for name in SERVICE_SCHEMAS:
        module = importlib.import_module(name)
        metadata: sa.MetaData = module.metadata
        with db.begin() as conn:
            # Serialise concurrent initialisers (several stacks or Jobs starting at once).
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242)"))
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{metadata.schema}"'))
            if hasattr(module, "upgrade"):
                module.upgrade(conn)
            metadata.create_all(conn)
            if (seed_dev or seed_catalogue) and hasattr(module, "seed_catalogue"):
                module.seed_catalogue(conn)
            if seed_dev and hasattr(module, "seed_dev"):
                module.seed_dev(conn)


@click.command("db-init")
@click.option("--database-url", default=lambda: os.environ.get("DATABASE_URL", ""), show_default="$DATABASE_URL")
@click.option("--seed-dev", is_flag=True, help="Also load the dev stack's demo data and users (never in a cluster).")
@click.option("--seed-catalogue", is_flag=True, help="Also load the goods catalogue (no users).")
def db_init(database_url: str, seed_dev: bool, seed_catalogue: bool) -> None:
    """Create every service's schema and tables."""
    if not database_url:
        raise click.UsageError("no database: pass --database-url or set DATABASE_URL")
    init_databases(database_url, seed_dev=seed_dev, seed_catalogue=seed_catalogue)
    click.echo("schemas ready: " + ", ".join(SERVICE_SCHEMAS))

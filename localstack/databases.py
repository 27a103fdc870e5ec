"""A database of its own for a test or benchmark run, created on a PostgreSQL server and dropped afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

DROP_TRIES = 40  # a quarter second apart: a stopping stack's pools may still reconnect for a moment


@contextmanager
def throwaway_database(server_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database named `<prefix>_<random>`; dropped (connections cut) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    server = sa.make_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            _drop(conn, name)
        admin.dispose()


def _drop(conn: sa.Connection, name: str) -> None:
    """Cut our own role's connections, then DROP DATABASE, which stops an autovacuum worker on it by itself.
    Not `WITH (FORCE)`: that must terminate every backend, an autovacuum worker too, which a role that is
    not a superuser may not signal (it failed a teardown at random)."""
    for attempt in range(DROP_TRIES):
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                             "AND pid <> pg_backend_pid() AND usename = current_user"), {"name": name})
        try:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            return
        except sa.exc.OperationalError:  # still in use: a connection came back between the two statements
            if attempt == DROP_TRIES - 1:
                raise
            time.sleep(0.25)

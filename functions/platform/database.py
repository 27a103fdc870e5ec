"""One `saga.transaction.Database` (connection pool + the threads its transactions run on) per
database URL per process, made on first use (not at import: that would be cold-start time)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from saga.transaction import Database

DEFAULT_THREADS = 8


# The functions that also hold one LISTEN connection (functions/platform/notices.py), by source file.
LISTENING_SOURCES = frozenset({"functions/order/api.py"})


def pool_size(env: Mapping[str, str]) -> int:
    """Connections one function process's pool holds at most: one per request it serves at once
    (THREADS = the Service's containerConcurrency)."""
    return int(env.get("THREADS", DEFAULT_THREADS))


def connections_held(env: Mapping[str, str]) -> int:
    """Connections one function process holds at most: its pool, and its LISTEN connection if it has
    one; tests/manifests checks PostgreSQL admits them all at every Service's max-scale."""
    return pool_size(env) + (1 if env.get("FUNCTION_SOURCE") in LISTENING_SOURCES else 0)


@functools.cache
def database(url: str) -> Database:
    return Database(postgres_url(url), pool_size(os.environ))


def postgres_url(url: str) -> str:
    """A libpq URL: SQLAlchemy's driver suffix (`postgresql+psycopg://`), which the tools use, dropped."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url

"""One `saga.transaction.Database` (connection pool + the threads its transactions run on) per
database URL per process, made on first use (not at import: that would be cold-start time)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping

from saga.transaction import Database

DEFAULT_THREADS = 8


def pool_size(env: Mapping[str, str]) -> int:
    """Connections one function process holds at most: one per request it serves at once (THREADS =
    the Service's containerConcurrency); tests/manifests checks PostgreSQL admits them all."""
    return int(env.get("THREADS", DEFAULT_THREADS))


@functools.cache
def database(url: str) -> Database:
    return Database(postgres_url(url), pool_size(os.environ))


def postgres_url(url: str) -> str:
    """A libpq URL: SQLAlchemy's driver suffix (`postgresql+psycopg://`), which the tools use, dropped."""
    scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep and scheme.startswith("postgres") else url

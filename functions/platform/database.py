"""One SQLAlchemy engine per database URL per process, created on first use (not at import: that
would be cold-start time)."""

from __future__ import annotations

import functools
import os

import sqlalchemy as sa

from functions.platform.config import normalise_database_url

DEFAULT_THREADS = 8


@functools.cache
def engine(url: str) -> sa.Engine:
    # One pooled connection per gunicorn thread (THREADS = the Service's containerConcurrency): with
    # fewer, each busy moment opened and closed overflow connections, a PostgreSQL backend fork
    # apiece (docs/performance.md). Pre-ping drops connections that died while the function was
    # idle or PostgreSQL restarted.
    threads = int(os.environ.get("THREADS", DEFAULT_THREADS))
    return sa.create_engine(
        normalise_database_url(url), pool_size=threads, max_overflow=4, pool_pre_ping=True, pool_recycle=600
    )

"""One SQLAlchemy engine per database URL per process, created on first use (not at import: that
would be cold-start time)."""

from __future__ import annotations

import functools

import sqlalchemy as sa

from functions.platform.config import normalise_database_url


@functools.cache
def engine(url: str) -> sa.Engine:
    # A function process serves a few concurrent requests (gunicorn threads); pre-ping drops
    # connections that died while the function was idle or PostgreSQL restarted.
    return sa.create_engine(
        normalise_database_url(url), pool_size=5, max_overflow=15, pool_pre_ping=True, pool_recycle=600
    )

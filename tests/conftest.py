"""Session fixtures: one real PostgreSQL and one real Kafka for the whole run (started only when a
test asks for them), and a fresh database for the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from localstack.infra import Infra, repo_root, test_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with test_infra(repo_root()) as running:
        yield running


@pytest.fixture(scope="session")
def db(infra: Infra) -> Iterator[sa.Engine]:
    """A database of its own for this run's integration tests, with every service's schema."""
    from functions.schemas import init_databases

    name = f"saga_it_{uuid.uuid4().hex[:8]}"
    server = sa.make_url(infra.database_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    init_databases(url, seed_dev=True)
    engine = sa.create_engine(url, pool_size=10)
    yield engine
    engine.dispose()
    from functions.platform.database import engine as cached_engine

    cached_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()

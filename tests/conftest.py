"""Session fixtures: one real PostgreSQL and one real Kafka for the whole run (started only when a
test asks for them), and a fresh database for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from functions.platform.database import postgres_url
from localstack.databases import throwaway_database
from localstack.infra import Infra, repo_root, test_infra
from saga.transaction import Database


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with test_infra(repo_root()) as running:
        yield running


@pytest.fixture(scope="session")
def database_url(infra: Infra) -> Iterator[str]:
    """A database of its own for this run's integration tests, with every service's schema."""
    from functions.schemas import init_databases

    with throwaway_database(infra.database_url, "saga_it") as url:
        init_databases(url, seed_dev=True)
        yield url


@pytest.fixture(scope="session")
def db(database_url: str) -> Iterator[sa.Engine]:
    """SQLAlchemy on the test database, for the tests' own reads and set-up."""
    engine = sa.create_engine(database_url, pool_size=10)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    """The functions' own access to the test database (`saga.transaction`)."""
    found = Database(postgres_url(database_url), size=8)
    yield found
    found.close()

"""Session fixtures: one real PostgreSQL and one real Kafka for the whole run (started only when a
test asks for them), and a fresh database for the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from localstack.databases import throwaway_database
from localstack.infra import Infra, repo_root, test_infra


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    with test_infra(repo_root()) as running:
        yield running


@pytest.fixture(scope="session")
def db(infra: Infra) -> Iterator[sa.Engine]:
    """A database of its own for this run's integration tests, with every service's schema."""
    from functions.platform.database import engine as cached_engine
    from functions.schemas import init_databases

    with throwaway_database(infra.database_url, "saga_it") as url:
        init_databases(url, seed_dev=True)
        engine = sa.create_engine(url, pool_size=10)
        yield engine
        engine.dispose()
        cached_engine(url).dispose()

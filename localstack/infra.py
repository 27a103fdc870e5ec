"""The local infrastructure: a real PostgreSQL and a real Kafka (KRaft), started by the project.

`DATABASE_URL` / `KAFKA_BOOTSTRAP_SERVERS` select existing servers instead. A server of ours still
answering on its port (say, from a stack that was killed) is reused rather than started twice, and
left running on exit, since this run did not start it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import click

from functions.platform.config import normalise_database_url
from localstack.kafka import KafkaServer
from localstack.postgres import PostgresServer
from localstack.process import port_open

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Infra:
    database_url: str  # SQLAlchemy URL (postgresql+psycopg://...)
    kafka_bootstrap: str


class LocalInfra:
    def __init__(self, repo: Path, root: Path, *, pg_port: int, kafka_port: int,
                 env: Mapping[str, str] | None = None) -> None:
        self.repo = repo
        self.root = root
        self.pg_port = pg_port
        self.kafka_port = kafka_port
        self.env = os.environ if env is None else env
        self._started: list[PostgresServer | KafkaServer] = []

    def __enter__(self) -> Infra:
        try:
            return Infra(database_url=self._database(), kafka_bootstrap=self._kafka())
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _database(self) -> str:
        if self.env.get("DATABASE_URL"):
            return normalise_database_url(self.env["DATABASE_URL"])
        server = PostgresServer(self.root / "postgres", self.pg_port)
        if port_open(self.pg_port):
            log.info("PostgreSQL already answers on 127.0.0.1:%s: reusing it", self.pg_port)
        else:
            server.start()
            self._started.append(server)
        return server.url

    def _kafka(self) -> str:
        if self.env.get("KAFKA_BOOTSTRAP_SERVERS"):
            return self.env["KAFKA_BOOTSTRAP_SERVERS"]
        server = KafkaServer(self.repo, self.root / "kafka", self.kafka_port)
        if port_open(self.kafka_port):
            log.info("Kafka already answers on %s: reusing it", server.bootstrap)
        else:
            server.start()
            self._started.append(server)
        return server.bootstrap

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        while self._started:
            self._started.pop().stop()


def dev_infra(repo: Path) -> LocalInfra:
    return LocalInfra(repo, repo / ".local" / "dev", pg_port=55432, kafka_port=19092)


def suite_port_shift() -> int:
    """SAGA_TEST_PORT_SHIFT moves a test run's ports and data aside, so two suites can run at once on one
    machine (two clones, or a change and its base): 0 by default; a multiple of 100 (the width of a
    stack's ports) up to 900."""
    shift = int(os.environ.get("SAGA_TEST_PORT_SHIFT", "0"))
    if not 0 <= shift <= 900 or shift % 100:
        raise ValueError(f"SAGA_TEST_PORT_SHIFT must be a multiple of 100 from 0 to 900, not {shift}")
    return shift


def test_infra(repo: Path) -> LocalInfra:
    shift = suite_port_shift()
    root = repo / ".local" / ("test" if not shift else f"test-{shift}")
    return LocalInfra(repo, root, pg_port=65432 - shift, kafka_port=29092 + shift)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def git_revision() -> str:
    """The checked-out revision (short), `-dirty` with uncommitted changes: what a result was measured on."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True, check=False).stdout
    revision = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    return revision + ("-dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")


@click.group("infra")
def infra_command() -> None:
    """The local PostgreSQL and Kafka on their own."""


@infra_command.command("up")
def infra_up() -> None:
    """Start the dev PostgreSQL and Kafka and keep them running until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with dev_infra(repo_root()) as infra:
        click.echo(f"PostgreSQL: {infra.database_url}\nKafka:      {infra.kafka_bootstrap}\nCtrl-C stops them.")
        stop.wait()

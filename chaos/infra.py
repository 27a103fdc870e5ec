"""The fault-injection run's own PostgreSQL and Kafka: started fresh for each run, on ports of their
own, so crashing them disturbs nothing else (the dev stack, a test session)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from types import TracebackType

import click

from localstack.infra import Infra
from localstack.kafka import KafkaServer
from localstack.postgres import PostgresServer
from localstack.process import port_open

PG_PORT = 25432  # below the ephemeral range (32768+), apart from dev (55432) and tests (65432)
KAFKA_PORT = 24092  # and its controller on 24093


class ChaosInfra:
    def __init__(self, repo: Path, root: Path, *, port_shift: int = 0) -> None:
        self.root = root
        self.ports = (PG_PORT + port_shift, KAFKA_PORT + port_shift, KAFKA_PORT + port_shift + 1)
        self.postgres = PostgresServer(root / "postgres", self.ports[0])
        self.kafka = KafkaServer(repo, root / "kafka", self.ports[1])
        self._lock = threading.Lock()  # one restart at a time

    def __enter__(self) -> Infra:
        busy = [port for port in self.ports if port_open(port)]
        if busy:
            raise click.ClickException(f"port(s) {busy} already answer: is another chaos run going on?")
        # Fresh data each run: the checks read everything that happened, and only this run's.
        for folder in (self.root / "postgres", self.root / "kafka"):
            shutil.rmtree(folder, ignore_errors=True)
        try:
            self.postgres.start()
            self.kafka.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return Infra(database_url=self.postgres.url, kafka_bootstrap=self.kafka.bootstrap)

    def restart_kafka(self) -> None:
        """SIGKILL the broker, then start it on the same data (log recovery)."""
        with self._lock:
            self.kafka.crash()
            self.kafka.start()

    def restart_postgres(self) -> None:
        """Immediate shutdown, then start on the same data (crash recovery)."""
        with self._lock:
            self.postgres.crash()
            self.postgres.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.kafka.stop()
        self.postgres.stop()

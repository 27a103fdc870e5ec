"""The dispatcher's bookkeeping, apart from Kafka and HTTP: where each partition's commit may go,
which Kafka call a thread is blocked in (for the watchdog), and which client errors are fatal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import KafkaError

KAFKA_CALL_TIMEOUT = 30.0  # seconds a blocking Kafka call (a synchronous commit, close) should take
KAFKA_CALL_HUNG = 2 * KAFKA_CALL_TIMEOUT  # a call blocked this long ignored its timeout: the process ends
WATCHDOG_EXIT_CODE = 75


def is_fatal(error: KafkaError) -> bool:
    """A fatal client error. One that comes as a message carries the code _FATAL without the fatal
    flag (seen in CI: a fenced static consumer, logged as a warning, went silent for good)."""
    return bool(error.fatal() or error.code() == KafkaError._FATAL)


class KafkaCallWatch:
    """The blocking Kafka call a thread is in, for the watchdog: librdkafka can block past the
    timeout it was given (seen after broker restarts); the process then ends and is restarted, as
    Kubernetes restarts a pod whose liveness probe fails."""

    def __init__(self) -> None:
        self.call: tuple[str, float] | None = None  # the call under way, since when

    @contextmanager
    def blocking(self, call: str) -> Iterator[None]:
        self.call = (call, time.monotonic())
        try:
            yield
        finally:
            self.call = None

    def hung(self) -> str | None:
        """The call blocked past any timeout it was given, if any."""
        current = self.call
        if current is not None and time.monotonic() - current[1] > KAFKA_CALL_HUNG:
            return current[0]
        return None


class PartitionProgress:
    """Which of a partition's records are done; the commit point is the first one not done (Knative's
    OffsetTracker), so nothing still in flight is ever committed past."""

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.end: int | None = None  # the offset after the last record taken
        self.committed = -1

    def take(self, offset: int, *, deliver: bool) -> None:
        if deliver:
            self.pending.add(offset)
        self.end = offset + 1

    def done(self, offset: int) -> None:
        self.pending.discard(offset)

    def commit_point(self) -> int | None:
        return min(self.pending) if self.pending else self.end

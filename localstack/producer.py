"""One idempotent Kafka producer for asyncio code: `await send(record)` returns once Kafka has
acknowledged the record (acks=all), or raises. Shared by the broker ingress and the dispatcher.

confluent-kafka's own asyncio producer (`confluent_kafka.aio.AIOProducer`) batches in Python and
refuses record headers, which every CloudEvent in binary mode needs; so this wraps the plain
Producer: librdkafka batches and retries in its threads, one thread here serves delivery reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from saga.eventing.binding import Record

log = logging.getLogger(__name__)

# How long librdkafka keeps retrying a record before reporting it failed: the Java client's default
# `delivery.timeout.ms`, which Knative's receiver and dispatcher run with. A broker restart in the
# chaos run is over well within it.
DELIVERY_TIMEOUT_MS = 120_000


# Sent at once, as Knative's receiver and dispatcher do (`linger.ms=0` in config-kafka-broker-data-plane):
# a 1 ms linger added 7 ms to a saga at 10/s (four records, each waiting before its request went out).
LINGER_MS = 0


class AsyncProducer:
    def __init__(self, bootstrap: str, **config: Any) -> None:
        self._config = {
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": LINGER_MS,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "log_level": 2,  # failures reach the sender through its delivery report
            **config,
        }
        self._producer = Producer(self._config)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve_reports, name="producer-reports", daemon=True)
        self._thread.start()

    async def send(self, record: Record) -> None:
        """Write `record`; returns when Kafka acknowledged it. KafkaException when it was refused or
        not acknowledged in time; BufferError when librdkafka's queue is full."""
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[KafkaError | None] = loop.create_future()

        def settle(error: KafkaError | None) -> None:
            if not acknowledged.done():
                acknowledged.set_result(error)

        def on_delivery(error: KafkaError | None, _message: object) -> None:  # on the reports thread
            loop.call_soon_threadsafe(settle, error)

        try:
            self._producer.produce(record.topic, value=record.value, key=record.key,
                                   headers=list(record.headers.items()), on_delivery=on_delivery)
        except KafkaException as exc:
            self._renew_if_fatal(exc.args[0])
            raise
        error = await acknowledged
        if error is not None:
            self._renew_if_fatal(error)
            raise KafkaException(error)

    def _renew_if_fatal(self, error: KafkaError) -> None:
        """An idempotent producer with a fatal error (its sequence lost, say, after a broker's data
        was) refuses every later record: the next ones go through a new one."""
        if error.fatal():
            log.error("the producer failed for good (%s); starting a new one", error)
            failed, self._producer = self._producer, Producer(self._config)
            failed.purge()

    def _serve_reports(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def close(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` for what is queued, then stop serving reports."""
        self._producer.flush(timeout)
        self._stop.set()
        self._thread.join(timeout=5)

"""The Kafka broker's Trigger dispatcher, played locally (its own process: `python -m
localstack.dispatcher TOPOLOGY [READY_FILE]`, so tests can kill and restart it).

Per Trigger: a consumer group on the broker topic, the Trigger's exact-attribute filter, delivery
as Knative's dispatcher does it (`saga.eventing.dispatch`). Ordered Triggers deliver one event at
a time per partition; partitions proceed in parallel.

Unlike Knative's dispatcher, the replies and dead letters of each poll batch are committed in one
Kafka transaction with the consumed offsets: a crash of this process never writes a reply twice nor
loses one (a subscriber may see an event again, and deduplicates it). A batch that writes nothing
needs no transaction: its offsets go with the next one, or in a plain commit within a second.

librdkafka can block in a call past the timeout it was given (librdkafka #5456 and #5511:
`send_offsets_to_transaction` after the group coordinator's broker restarted; seen in the chaos
run). A watchdog ends the process when a Kafka call outlives its timeout by far, and the process
is restarted as Kubernetes restarts a pod whose liveness probe fails: the open transaction is
aborted by the next producer with the same transactional id, and the batch is delivered again.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from saga.eventing.dispatch import Deliverer, matches
from saga.eventing.records import Record, event_of, header_matches, kafka_record
from saga.eventing.topology import Topology, Trigger

log = logging.getLogger("dispatcher")

BATCH = 500
OFFSET_COMMIT_SECONDS = 1.0
KAFKA_CALL_TIMEOUT = 30.0  # seconds given to each blocking Kafka call
KAFKA_CALL_HUNG = 2 * KAFKA_CALL_TIMEOUT  # a call blocked this long ignored its timeout: the process ends
WATCHDOG_EXIT_CODE = 75


def is_fatal(error: KafkaError) -> bool:
    """A fatal client error. One that comes as a message carries the code _FATAL without the fatal
    flag (seen in CI: a fenced static consumer, logged as a warning, went silent for good)."""
    return bool(error.fatal() or error.code() == KafkaError._FATAL)


class TriggerWorker(threading.Thread):
    def __init__(self, config: Topology, trigger: Trigger, stop: threading.Event) -> None:
        super().__init__(name=f"trigger-{trigger.name}", daemon=True)
        self.config = config
        self.trigger = trigger
        self.stop = stop
        self.assigned = threading.Event()
        self.deliverer = Deliverer(trigger, httpx.Client(limits=httpx.Limits(max_connections=32)))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"deliver-{trigger.name}")
        self.uncommitted: dict[int, int] = {}  # partition -> offset after the last record handled
        self.committed_at = 0.0
        self.kafka_call: tuple[str, float] | None = None  # the blocking Kafka call under way, since when

    @contextmanager
    def blocking(self, call: str) -> Iterator[None]:
        """Marks a blocking Kafka call for the watchdog."""
        self.kafka_call = (call, time.monotonic())
        try:
            yield
        finally:
            self.kafka_call = None

    def hung(self) -> str | None:
        """The Kafka call blocked past any timeout it was given, if any."""
        current = self.kafka_call
        if current is not None and time.monotonic() - current[1] > KAFKA_CALL_HUNG:
            return current[0]
        return None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._consume()
            except Exception:
                # A fenced producer or a broken transaction: start over from the committed offsets.
                log.exception("%s: restarting the consumer", self.trigger.name)
                self.stop.wait(1.0)

    def _consume(self) -> None:
        trigger = self.trigger
        consumer = Consumer({
            "bootstrap.servers": self.config.bootstrap,
            "group.id": trigger.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # read_uncommitted: a transaction left open on a partition by a broker crash (seen in the
            # chaos run: a commit recorded by the coordinator whose markers never reached the partition)
            # stops read_committed consumers there for good. Every subscriber deduplicates, and a
            # reply in an aborted transaction is a fact its participant committed, so reading it is
            # at worst a duplicate. Replies and offsets are still written in one transaction.
            "isolation.level": "read_uncommitted",
            "fetch.wait.max.ms": 500,
            # Static membership: a restarted dispatcher takes its partitions back at once instead of
            # waiting for the killed one's session to expire (and the group rebalancing).
            "group.instance.id": f"{trigger.group}-dispatcher",
            "session.timeout.ms": 10000,
            "log_level": 3,
        })
        producer = Producer({
            "bootstrap.servers": self.config.bootstrap,
            "transactional.id": f"knative-saga-dispatcher-{trigger.group}",
            "linger.ms": 1,
            "log_level": 3,
        })
        self.uncommitted.clear()  # a new consumer starts from the committed offsets
        try:
            with self.blocking("init_transactions"):
                producer.init_transactions(KAFKA_CALL_TIMEOUT)
            consumer.subscribe([self.config.topic], on_assign=lambda c, partitions: self.assigned.set())
            while not self.stop.is_set():
                # consume(n, timeout) waits for n messages or the timeout: wait for one, then take
                # whatever else is already there, so an event never waits for a batch to fill.
                first = consumer.poll(0.1)
                if first is None:
                    self._commit_offsets(consumer)  # what the last batches left uncommitted, when due
                    continue
                batch = [first, *consumer.consume(BATCH - 1, timeout=0)]
                for failed in [e for e in (m.error() for m in batch) if e is not None]:
                    # A fatal error (say, fenced after a broker restart) ends this consumer: poll would
                    # only repeat it, so start over with a new one. Others are informational.
                    if is_fatal(failed):
                        raise KafkaException(failed)
                    log.warning("%s: %s", trigger.name, failed)
                messages = [m for m in batch if m.error() is None]
                if messages:
                    self._dispatch_batch(consumer, producer, messages)
            self._commit_offsets(consumer, force=True)
        finally:
            with self.blocking("close"):
                consumer.close()

    def _dispatch_batch(self, consumer: Consumer, producer: Producer, messages: list[Message]) -> None:
        for message in messages:
            self.uncommitted[message.partition() or 0] = (message.offset() or 0) + 1
        # Most records are for other Triggers and are skipped unread.
        wanted = [m for m in messages if header_matches(m, self.trigger.filter)]
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for message in wanted:
            by_partition[message.partition() or 0].append(message)
        if self.trigger.ordered:
            jobs = [self.pool.submit(lambda ms: [r for m in ms for r in self._handle(m)], ms)
                    for ms in by_partition.values()]
        else:
            jobs = [self.pool.submit(self._handle, m) for m in wanted]
        records: list[Record] = []
        for job in jobs:
            records.extend(job.result())
        if not records:
            # Nothing to write, so nothing for the offsets to be atomic with: they wait for the next
            # transaction or a plain commit at most once a second, instead of a transaction each
            # (most of Kafka's work per saga, docs/performance.md). A crash before that commit
            # redelivers those events; their subscribers deduplicate them, as after any crash.
            self._commit_offsets(consumer)
            return
        offsets = [TopicPartition(self.config.topic, p, end) for p, end in self.uncommitted.items()]
        producer.begin_transaction()
        try:
            for record in records:
                producer.produce(record.topic, value=record.value, key=record.key, headers=list(record.headers.items()))
            with self.blocking("send_offsets_to_transaction"):
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), KAFKA_CALL_TIMEOUT)
            with self.blocking("commit_transaction"):
                producer.commit_transaction(KAFKA_CALL_TIMEOUT)
        except KafkaException:
            with self.blocking("abort_transaction"):
                producer.abort_transaction(KAFKA_CALL_TIMEOUT)
            raise
        self.uncommitted.clear()
        self.committed_at = time.monotonic()

    def _commit_offsets(self, consumer: Consumer, force: bool = False) -> None:
        if self.uncommitted and (force or time.monotonic() - self.committed_at > OFFSET_COMMIT_SECONDS):
            offsets = [TopicPartition(self.config.topic, p, end) for p, end in self.uncommitted.items()]
            with self.blocking("commit"):
                consumer.commit(offsets=offsets, asynchronous=False)
            self.uncommitted.clear()
            self.committed_at = time.monotonic()

    def _handle(self, message: Message) -> list[Record]:
        event = event_of(message)
        if event is None:
            log.error("%s: offset %s is not a CloudEvent; skipped", self.trigger.name, message.offset())
            return []
        if not matches(event, self.trigger.filter):  # header_matches passed: the attributes decide
            return []
        outcome = self.deliverer.deliver(event)
        if outcome.reply is not None:
            return [kafka_record(outcome.reply, self.config.topic)]
        dead_letter_topic = self.trigger.delivery.dead_letter_topic
        if outcome.dead_letter is not None and dead_letter_topic is not None:
            return [kafka_record(outcome.dead_letter, dead_letter_topic)]
        return []  # delivered without a reply, or failed with no dead-letter sink (Knative drops it too)


def run(config: Topology, stop: threading.Event, ready_file: Path | None = None) -> None:
    workers = [TriggerWorker(config, trigger, stop) for trigger in config.triggers]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while not stop.is_set() and not all(w.assigned.is_set() for w in workers) and time.monotonic() < deadline:
        stop.wait(0.05)
    if ready_file is not None:
        ready_file.write_text("ready")
    log.info("dispatching %d trigger(s)", len(workers))
    while not stop.wait(1.0):
        for worker in workers:
            call = worker.hung()
            if call is not None:
                log.critical("%s: %s blocked for over %.0f s; exiting to be restarted",
                             worker.trigger.name, call, KAFKA_CALL_HUNG)
                os._exit(WATCHDOG_EXIT_CODE)  # the hung thread cannot be stopped; the process can
    for worker in workers:
        worker.join(timeout=10)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(Topology.read(Path(sys.argv[1])), stop, Path(sys.argv[2]) if len(sys.argv) > 2 else None)


if __name__ == "__main__":
    main()


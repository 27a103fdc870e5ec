"""The Kafka broker's Trigger dispatcher, played locally as Knative's is (eventing-kafka-broker 1.22,
`data-plane/dispatcher`): at-least-once, no Kafka transactions. Its own process: `python -m
localstack.dispatcher TOPOLOGY [READY_FILE]`, so tests can kill and restart it.

Per Trigger: a consumer group on the broker topic; a record whose `ce_` headers pass the Trigger's
exact-attribute filter is delivered in HTTP binary mode (`saga.eventing.binding`: its data's bytes
as they are, `knativekafkapartition` and `knativekafkaoffset` added) with `Prefer: reply` and
Knative's retries; a reply goes back to the broker topic through one idempotent producer shared by
every Trigger, a failed delivery to the dead-letter topic. A record is done when its delivery ended
and what it wrote was acknowledged. Offsets are committed on a timer (Knative's
`auto.commit.interval.ms`, 5 s), each partition up to its first record not yet done: a crash
redelivers what was in flight or done since the last commit, and the subscribers' inboxes absorb it.

Unordered Triggers (Knative's default) deliver up to MAX_IN_FLIGHT records of a Trigger at once,
in any order, like Knative's `max.poll.records` (50); an ordered one delivers one record at a time
per partition, in offset order. While a Trigger has MAX_IN_FLIGHT records polled and not done, its
consumer does not poll, as Knative's does not.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path

import aiohttp
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import Counter, Gauge, start_http_server

from localstack.bookkeeping import KAFKA_CALL_HUNG, WATCHDOG_EXIT_CODE, KafkaCallWatch, PartitionProgress, is_fatal
from localstack.deliveries import Deliverer, Outcome
from localstack.producer import AsyncProducer
from saga.eventing.binding import InvalidEvent, RawEvent, from_record, header_name
from saga.eventing.dispatch import ERROR_DATA_LIMIT, matches
from saga.eventing.topology import Topology, Trigger

log = logging.getLogger("dispatcher")

MAX_IN_FLIGHT = 50  # records polled and not yet done, per Trigger: Knative's max.poll.records
COMMIT_INTERVAL = 5.0  # seconds between offset commits: Knative's auto.commit.interval.ms
POLL_SECONDS = 0.5  # a poll returns as soon as a record arrives; Knative's unordered poll timeout
DRAIN_SECONDS = 10.0  # how long a stopping dispatcher lets its deliveries under way end
METRICS_PORT_ENV = "DISPATCHER_METRICS_PORT"  # where it serves /metrics on 127.0.0.1 (the stack sets it)

# What Knative's dispatcher reports as its delivery metrics, and what a Kafka lag exporter would: per Trigger.
CONSUMER_LAG = Gauge("dispatcher_consumer_lag", "Records of the broker topic a Trigger has not done yet: the "
                     "partition's end minus the Trigger's commit point", ["trigger", "partition"])
DELIVERIES = Counter("dispatcher_deliveries", "Deliveries ended, by outcome: ok, failed (dead-lettered) or "
                     "skipped (not for this Trigger, or not a CloudEvent)", ["trigger", "outcome"])
DEAD_LETTERS = Counter("dispatcher_dead_letters", "Events written to a Trigger's dead-letter topic", ["trigger"])


class TriggerDispatcher(threading.Thread):
    """One Trigger: its consumer on this thread (a librdkafka consumer is not thread-safe), its
    deliveries on the event loop."""

    def __init__(self, topology: Topology, trigger: Trigger, producer: AsyncProducer,
                 session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
        super().__init__(name=f"trigger-{trigger.name}", daemon=True)
        self.topology = topology
        self.trigger = trigger
        self.producer = producer
        self.deliverer = Deliverer(trigger, session)
        self.loop = loop
        self.stop = stop
        self.assigned = threading.Event()
        self.filter_headers = {header_name(name): value.encode() for name, value in trigger.filter.items() if value}
        self.lock = threading.Lock()  # guards what both threads touch: progress, in_flight, generation
        self.progress: dict[int, PartitionProgress] = {}
        self.in_flight = 0
        self.room = threading.Event()  # set when a delivery ends: a consumer at a full window may poll
        self.draining = False  # shutting down: take no more records
        self.generation = 0  # a new consumer starts a new generation; older deliveries no longer count
        self.committed_at = 0.0
        self.watch = KafkaCallWatch()
        self.tasks: set[asyncio.Task[None]] = set()
        self.queues: dict[int, deque[tuple[int, Message]]] = {}  # ordered: records waiting per partition

    # --- the consumer thread ---
    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._consume()
            except Exception:
                # A fatal error (fenced after a broker restart): start over from the committed offsets.
                log.exception("%s: restarting the consumer", self.trigger.name)
                self.stop.wait(1.0)

    def _consume(self) -> None:
        trigger = self.trigger
        consumer = Consumer({
            "bootstrap.servers": self.topology.bootstrap,
            "group.id": trigger.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            # As Knative's dispatcher reads: nothing on the broker topic is written in a transaction.
            "isolation.level": "read_uncommitted",
            "fetch.wait.max.ms": 500,
            # Static membership: a restarted dispatcher takes its partitions back at once instead of
            # waiting for the killed one's session to expire (and the group rebalancing).
            "group.instance.id": f"{trigger.group}-dispatcher",
            "session.timeout.ms": 10000,
            # While its window is full the consumer does not poll: long enough for a window of
            # deliveries at their worst (7 attempts of 30 s, backoff, 120 s to write a reply, 120 s
            # to dead-letter it), so a slow subscriber never costs the Trigger its group membership.
            "max.poll.interval.ms": 600_000,
            "on_commit": self._on_commit,
            "log_level": 3,
        })
        with self.lock:
            self.generation += 1
            self.progress.clear()
        consumer.subscribe([self.topology.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        try:
            while not self.stop.is_set():
                self._commit(consumer)
                if self.in_flight >= MAX_IN_FLIGHT or self.draining:
                    # As Knative's: no poll while the window is full (librdkafka keeps fetching ahead
                    # and heartbeating on its own threads). Pausing the partitions instead stalled
                    # them for a second or more at each resume (closed loop at 64 clients: half the
                    # throughput).
                    self.room.wait(POLL_SECONDS)
                    self.room.clear()
                    continue
                first = consumer.poll(POLL_SECONDS)
                if first is None:
                    continue
                # consume(n, timeout) waits for n records or the timeout: take what is already there,
                # as much as the window has room for.
                room = MAX_IN_FLIGHT - self.in_flight - 1
                batch = [first, *(consumer.consume(room, timeout=0) if room > 0 else [])]
                for failed in [e for e in (m.error() for m in batch) if e is not None]:
                    if is_fatal(failed):
                        raise KafkaException(failed)
                    log.warning("%s: %s", trigger.name, failed)
                self._take([m for m in batch if m.error() is None])
            self._commit(consumer, final=True)
        finally:
            with self.watch.blocking("close"):
                consumer.close()

    def _take(self, messages: list[Message]) -> None:
        wanted = []
        with self.lock:
            generation = self.generation
            for message in messages:
                deliver = self._wanted(message)
                self.progress.setdefault(message.partition() or 0, PartitionProgress()).take(
                    message.offset() or 0, deliver=deliver)
                if deliver:
                    wanted.append(message)
            self.in_flight += len(wanted)
        if wanted:
            self.loop.call_soon_threadsafe(self._start, generation, wanted)

    def _wanted(self, message: Message) -> bool:
        """The Trigger's filter on the record's headers, without decoding it: most records are for
        other Triggers."""
        if not self.filter_headers:
            return True
        headers = dict(message.headers() or [])
        return all(headers.get(name) == value for name, value in self.filter_headers.items())

    def _commit(self, consumer: Consumer, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.committed_at < COMMIT_INTERVAL:
            return
        self.committed_at = now
        self._measure_lag(consumer)
        with self.lock:
            offsets = [TopicPartition(self.topology.topic, partition, point)
                       for partition, progress in self.progress.items()
                       if (point := progress.commit_point()) is not None and point > progress.committed]
        if not offsets:
            return
        if final:
            with self.watch.blocking("commit"):
                consumer.commit(offsets=offsets, asynchronous=False)
            self._on_commit(None, offsets)
        else:
            consumer.commit(offsets=offsets, asynchronous=True)  # reported to _on_commit by a later poll

    def _measure_lag(self, consumer: Consumer) -> None:
        """Each assigned partition's end (as last fetched: no call to the broker) minus where the Trigger
        would commit: what it still has to deliver, in flight included."""
        with self.lock:
            points = {p: progress.commit_point() for p, progress in self.progress.items()}
        try:
            assigned = consumer.assignment()
            for tp in assigned:
                _, end = consumer.get_watermark_offsets(tp, cached=True)
                point = points.get(tp.partition)
                if point is None:
                    point = consumer.position([tp])[0].offset
                if end >= 0 and point >= 0:
                    CONSUMER_LAG.labels(self.trigger.name, str(tp.partition)).set(max(0, end - point))
        except KafkaException as exc:  # a broker away: the gauge keeps its last value
            log.debug("%s: lag not measured: %s", self.trigger.name, exc)

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if error is not None:
            log.warning("%s: offset commit failed (tried again at the next interval): %s", self.trigger.name, error)
            return
        with self.lock:
            for tp in partitions:
                progress = self.progress.get(tp.partition)
                if progress is not None and tp.error is None:
                    progress.committed = max(progress.committed, tp.offset)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Before partitions go to another consumer: commit what is done of them, forget them."""
        with self.lock:
            revoked = {tp.partition for tp in partitions}
            offsets = [TopicPartition(self.topology.topic, p, point) for p in revoked
                       if p in self.progress and (point := self.progress[p].commit_point()) is not None]
            for partition in revoked:
                self.progress.pop(partition, None)
        if offsets:
            try:
                with self.watch.blocking("commit"):
                    consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                log.warning("%s: commit on revocation failed: %s", self.trigger.name, exc)

    # --- deliveries, on the event loop ---
    def _start(self, generation: int, messages: list[Message]) -> None:
        for message in messages:
            if not self.trigger.ordered:
                self._spawn(self._handle(generation, message))
                continue
            partition = message.partition() or 0
            queue = self.queues.setdefault(partition, deque())
            queue.append((generation, message))
            if len(queue) == 1:
                self._spawn(self._drain(queue))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self, queue: deque[tuple[int, Message]]) -> None:
        """An ordered Trigger's partition: one delivery at a time, in offset order."""
        while queue:
            generation, message = queue[0]
            await self._handle(generation, message)
            queue.popleft()

    async def _handle(self, generation: int, message: Message) -> None:
        try:
            await self._dispatch(message)
        except Exception as exc:
            # Not an outcome Knative's rules name: parked with the error, as a failed delivery is,
            # never just logged (its offset is committed like any other done record).
            log.exception("%s: offset %s of partition %s could not be dispatched",
                          self.trigger.name, message.offset(), message.partition())
            await self._park_undispatchable(message, exc)
        finally:
            with self.lock:
                self.in_flight -= 1
                progress = self.progress.get(message.partition() or 0)
                if generation == self.generation and progress is not None:
                    progress.done(message.offset() or 0)
            self.room.set()

    async def _dispatch(self, message: Message) -> None:
        try:
            event = from_record(message.headers() or [], message.value())  # type: ignore[arg-type]
        except InvalidEvent as exc:
            log.error("%s: offset %s is not a CloudEvent (%s); skipped", self.trigger.name, message.offset(), exc)
            DELIVERIES.labels(self.trigger.name, "skipped").inc()
            return
        if not matches(event, self.trigger.filter):  # the headers passed; an attribute decides (Knative's rule)
            DELIVERIES.labels(self.trigger.name, "skipped").inc()
            return
        delivered = event.with_attributes(knativekafkapartition=str(message.partition()),
                                          knativekafkaoffset=str(message.offset()))
        outcome = await self.deliverer.deliver(delivered)
        if outcome.reply is not None:
            try:
                await self.producer.send(outcome.reply.record(self.topology.topic))
                return
            except (KafkaException, BufferError) as exc:
                # As Knative's: a reply that cannot be written fails the delivery (to the dead letters).
                log.error("%s: the reply to %s could not be written: %s", self.trigger.name, event["id"], exc)
                outcome = Outcome(outcome.status, str(exc).encode(), failed=True)
        DELIVERIES.labels(self.trigger.name, "failed" if outcome.failed else "ok").inc()
        if outcome.failed:
            await self._dead_letter(delivered, outcome)

    async def _park_undispatchable(self, message: Message, error: Exception) -> None:
        try:
            event = from_record(message.headers() or [], message.value())  # type: ignore[arg-type]
        except Exception:
            log.error("%s: offset %s is dropped: it cannot be read", self.trigger.name, message.offset())
            return
        await self._dead_letter(event, Outcome(0, f"dispatcher error: {error!r}".encode(), failed=True))

    async def _dead_letter(self, event: RawEvent, outcome: Outcome) -> None:
        topic = self.trigger.delivery.dead_letter_topic
        if topic is None:
            return  # no dead-letter sink: Knative drops the event too
        parked = event.with_attributes(
            knativeerrordest=self.trigger.url,
            knativeerrorcode=str(outcome.status),
            knativeerrordata=base64.b64encode(outcome.answer[:ERROR_DATA_LIMIT]).decode(),
        )
        try:
            await self.producer.send(parked.record(topic))
            DEAD_LETTERS.labels(self.trigger.name).inc()
        except (KafkaException, BufferError) as exc:
            log.error("%s: event %s could not be dead-lettered and is dropped, as Knative does: %s",
                      self.trigger.name, event["id"], exc)


async def serve(topology: Topology, stopping: asyncio.Event, ready_file: Path | None = None) -> None:
    loop = asyncio.get_running_loop()
    producer = AsyncProducer(topology.bootstrap)
    # Idle keep-alive connections go after 1 s, before the functions' servers close them at 2 s:
    # reusing one a server is closing would fail a delivery attempt.
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0))
    stop = threading.Event()
    dispatchers = [TriggerDispatcher(topology, t, producer, session, loop, stop) for t in topology.triggers]
    for dispatcher in dispatchers:
        dispatcher.start()
    deadline = time.monotonic() + 60
    while not all(d.assigned.is_set() for d in dispatchers) and time.monotonic() < deadline and not stopping.is_set():
        await asyncio.sleep(0.05)
    if ready_file is not None:
        ready_file.write_text("ready")
    log.info("dispatching %d trigger(s)", len(dispatchers))
    try:
        while not stopping.is_set():
            await asyncio.sleep(1.0)
            for dispatcher in dispatchers:
                call = dispatcher.watch.hung()
                if call is not None:
                    log.critical("%s: %s blocked for over %.0f s; exiting to be restarted",
                                 dispatcher.trigger.name, call, KAFKA_CALL_HUNG)
                    os._exit(WATCHDOG_EXIT_CODE)  # the hung thread cannot be stopped; the process can
    finally:
        # Stop taking records, let the deliveries under way end (bounded), then commit what is done
        # and close: a delivery cut short would be both dead-lettered and, uncommitted, delivered again.
        for dispatcher in dispatchers:
            dispatcher.draining = True
        under_way = [task for dispatcher in dispatchers for task in dispatcher.tasks]
        if under_way:
            await asyncio.wait(under_way, timeout=DRAIN_SECONDS)
        stop.set()
        for dispatcher in dispatchers:
            await loop.run_in_executor(None, dispatcher.join, 10)
        await session.close()
        await loop.run_in_executor(None, producer.close)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    topology = Topology.read(Path(sys.argv[1]))
    ready_file = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    if os.environ.get(METRICS_PORT_ENV):
        start_http_server(int(os.environ[METRICS_PORT_ENV]), addr="127.0.0.1")

    async def run() -> None:
        stopping = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stopping.set)
        await serve(topology, stopping, ready_file)

    asyncio.run(run())


if __name__ == "__main__":
    main()

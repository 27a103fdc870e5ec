"""Replay mechanics: read a topic range in partition order, re-deliver each event to the Triggers
it matches with their own delivery rules, and write what comes back (replies to the broker topic,
failures to the dead-letter topic) as the Knative dispatcher would.

The Triggers' consumer groups are never touched: live dispatching goes on while a replay runs, and
the subscribers' inboxes make a second delivery of an event a no-op (docs/replay.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from cloudevents.http import CloudEvent
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from saga.eventing.dispatch import Deliverer, matches, without_error_extensions
from saga.eventing.records import event_of, kafka_record
from saga.eventing.topology import Delivery, Topology, Trigger
from saga.replay.positions import Range, Start, partitions, ranges

log = logging.getLogger(__name__)

QUEUE_DEPTH = 256  # events read ahead per partition
IDLE_LIMIT = 30.0  # seconds without a record while a range is unfinished: Kafka is not answering
Progress = Callable[[int], None]


def _no_progress(_: int) -> None:
    pass


@dataclass
class Tally:
    """What happened to one Trigger's share of a replay."""

    matched: int = 0
    delivered: int = 0
    replies: int = 0
    dead_lettered: int = 0
    types: Counter[str] = field(default_factory=Counter)
    first: float | None = None  # record timestamps, epoch seconds
    last: float | None = None

    def saw(self, event: CloudEvent, timestamp: float) -> None:
        self.matched += 1
        self.types[event["type"]] += 1
        self.first = timestamp if self.first is None else min(self.first, timestamp)
        self.last = timestamp if self.last is None else max(self.last, timestamp)

    def as_dict(self) -> dict[str, Any]:
        def moment(ts: float | None) -> str | None:
            return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")

        return {"matched": self.matched, "delivered": self.delivered, "replies": self.replies,
                "dead_lettered": self.dead_lettered, "first": moment(self.first), "last": moment(self.last),
                "types": dict(sorted(self.types.items()))}


def _timestamp(message: Message) -> float:
    kind, millis = message.timestamp()
    return millis / 1000 if kind else time.time()


class Kafka:
    """The Kafka clients a replay uses: a group-less reader (never commits), an idempotent writer."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._producer: Producer | None = None
        self._errors: list[str] = []
        self.written: dict[tuple[str, int], int] = {}  # (topic, partition) -> highest offset written
        self._lock = threading.Lock()

    def consumer(self, group: str | None = None, **extra: Any) -> Consumer:
        return Consumer({
            "bootstrap.servers": self.bootstrap,
            # A group id is required by the client; a reader's own random one is never committed to.
            "group.id": group or f"knative-saga-replay-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            "log_level": 3,
            **extra,
        })

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                                       "acks": "all", "linger.ms": 5, "log_level": 3})
        return self._producer

    def write(self, event: CloudEvent, topic: str) -> None:
        record = kafka_record(event, topic)

        def delivered(error: KafkaError | None, message: Message) -> None:
            with self._lock:
                if error is not None:
                    self._errors.append(f"{event['id']} -> {topic}: {error}")
                else:
                    key = (message.topic() or topic, message.partition() or 0)
                    self.written[key] = max(self.written.get(key, -1), message.offset() or 0)

        while True:
            try:
                self.producer.produce(record.topic, value=record.value, key=record.key,
                                      headers=list(record.headers.items()), on_delivery=delivered)
                break
            except BufferError:  # the client's queue is full: let it drain
                self.producer.poll(0.1)
        self.producer.poll(0)

    def flush(self, timeout: float = 60.0) -> None:
        if self._producer is not None and self._producer.flush(timeout) > 0:
            raise RuntimeError(f"{self._producer.flush(0)} record(s) not written to Kafka within {timeout:.0f} s")
        if self._errors:
            raise RuntimeError(f"records not written to Kafka: {self._errors[:5]}")


def read(kafka: Kafka, topic: str, spans: Sequence[Range], consumer: Consumer | None = None) -> Iterator[Message]:
    """Every committed record in `spans`, in offset order within each partition."""
    pending = {span.partition: span for span in spans if span.size}
    if not pending:
        return
    reader = consumer or kafka.consumer()
    reader.assign([TopicPartition(topic, p, span.start) for p, span in pending.items()])
    idle_since = time.monotonic()
    try:
        while pending:
            message = reader.poll(0.5)
            if message is None:
                if time.monotonic() - idle_since > IDLE_LIMIT:
                    raise TimeoutError(f"no record from {topic} for {IDLE_LIMIT:.0f} s; partitions left: "
                                       f"{sorted(pending)}")
                continue
            idle_since = time.monotonic()
            partition = message.partition() or 0
            span = pending.get(partition)
            if span is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    del pending[partition]  # nothing more was committed before the replay began
                    continue
                raise RuntimeError(f"reading {topic}: {error}")
            if (message.offset() or 0) >= span.end:
                del pending[partition]
                reader.pause([TopicPartition(topic, partition)])
                continue
            yield message
    finally:
        if consumer is None:
            reader.close()


def in_partition_order(messages: Iterator[Message], handle: Callable[[Message], None], lanes: Sequence[int]) -> None:
    """Run `handle` on each message, one partition's messages in order, partitions in parallel."""
    queues: dict[int, queue.Queue[Message | None]] = {p: queue.Queue(QUEUE_DEPTH) for p in lanes}
    failures: list[BaseException] = []

    def lane(inbox: queue.Queue[Message | None]) -> None:
        while (message := inbox.get()) is not None:
            if failures:
                continue  # drain without work so the reader never blocks on a dead lane
            try:
                handle(message)
            except BaseException as exc:
                failures.append(exc)

    workers = [threading.Thread(target=lane, args=(q,), daemon=True) for q in queues.values()]
    for worker in workers:
        worker.start()
    try:
        for message in messages:
            if failures:
                break
            queues[message.partition() or 0].put(message)
    finally:
        for inbox in queues.values():
            inbox.put(None)
        for worker in workers:
            worker.join()
    if failures:
        raise failures[0]


class Replayer:
    def __init__(self, topology: Topology, *, discard_replies: bool = False, concurrency: int = 32) -> None:
        self.topology = topology
        self.kafka = Kafka(topology.bootstrap)
        self.discard_replies = discard_replies
        self.client = httpx.Client(limits=httpx.Limits(max_connections=concurrency))
        self._lock = threading.Lock()

    def close(self) -> None:
        self.client.close()

    # --- history ---
    def replay(self, triggers: Sequence[Trigger], start: Start, *, dry_run: bool = False,
               progress: Progress = _no_progress, on_plan: Callable[[int], None] | None = None) -> dict[str, Tally]:
        """Re-deliver every event of the broker topic from `start` to each Trigger it matches."""
        tallies = {t.name: Tally() for t in triggers}
        deliverers = {t.name: Deliverer(t, self.client) for t in triggers}
        topic = self.topology.topic
        with self._reader() as consumer:
            spans = ranges(consumer, topic, start)
            if on_plan is not None:
                on_plan(sum(s.size for s in spans))
            passed = _Passed(spans, progress)

            def handle(message: Message) -> None:
                event = event_of(message)
                if event is not None:
                    for trigger in triggers:
                        if matches(event, trigger.filter):
                            with self._lock:
                                tallies[trigger.name].saw(event, _timestamp(message))
                            if not dry_run:
                                self._deliver(deliverers[trigger.name], tallies[trigger.name], event)
                passed.record(message)

            in_partition_order(read(self.kafka, topic, spans, consumer), handle, [s.partition for s in spans])
            passed.all()
        self.kafka.flush()
        return tallies

    def _deliver(self, deliverer: Deliverer, tally: Tally, event: CloudEvent) -> bool:
        trigger = deliverer.trigger
        outcome = deliverer.deliver(event)
        if outcome.reply is not None and not self.discard_replies:
            self.kafka.write(outcome.reply, self.topology.topic)
        if outcome.dead_letter is not None and trigger.delivery.dead_letter_topic is not None:
            self.kafka.write(outcome.dead_letter, trigger.delivery.dead_letter_topic)
        with self._lock:
            tally.delivered += outcome.delivered
            tally.replies += outcome.reply is not None
            tally.dead_lettered += outcome.dead_letter is not None
        return outcome.delivered

    # --- dead letters ---
    def redrive(self, triggers: Sequence[Trigger], start: Start | None = None, *, dry_run: bool = False,
                progress: Progress = _no_progress, on_plan: Callable[[int], None] | None = None) -> dict[str, Tally]:
        """Deliver each Trigger's parked events again, from where its last redrive stopped (or `start`).

        A dead letter belongs to the Trigger whose subscriber it failed at (`knativeerrordest`). Each
        Trigger's redrive position is the consumer group `<trigger group>-redrive`, committed after
        the redriven events' outcomes are written, so a second redrive takes only what was parked since.
        `on_plan` is told, per Trigger, how many records its redrive reads.
        """
        tallies = {t.name: Tally() for t in triggers}
        for trigger in triggers:
            topic, group = trigger.delivery.dead_letter_topic, f"{trigger.group}-redrive"
            if topic is None:
                continue
            deliverer = Deliverer(trigger, self.client)
            with self._reader(group) as consumer:
                spans = ranges(consumer, topic, start or Start(earliest=True))
                if start is None:
                    spans = _from_committed(consumer, topic, spans)
                if on_plan is not None:
                    on_plan(sum(s.size for s in spans))
                passed = _Passed(spans, progress)
                for message in read(self.kafka, topic, spans, consumer):
                    parked = event_of(message)
                    if parked is not None and self._belongs(parked, trigger):
                        event = without_error_extensions(parked)
                        tallies[trigger.name].saw(event, _timestamp(message))
                        if not dry_run:
                            self._deliver(deliverer, tallies[trigger.name], event)
                    passed.record(message)
                passed.all()
                if not dry_run and spans:
                    self.kafka.flush()  # outcomes written before the position moves past them
                    consumer.commit(offsets=[TopicPartition(topic, s.partition, s.end) for s in spans],
                                    asynchronous=False)
        return tallies

    def _belongs(self, parked: CloudEvent, trigger: Trigger) -> bool:
        destination = parked.get("knativeerrordest")
        if destination is not None and any(t.url == destination for t in self.topology.triggers):
            return bool(destination == trigger.url)
        # Parked by another deployment of the stack (other ports): the one Trigger whose filter takes it.
        takers = [t for t in self.topology.triggers if t.delivery.dead_letter_topic and matches(parked, t.filter)]
        return takers == [trigger]

    # --- one saga ---
    def saga_events(self, saga_id: str) -> list[tuple[Message, CloudEvent]]:
        """Every event of one saga in the broker topic, in the order the topic holds them."""
        found: list[tuple[Message, CloudEvent]] = []
        with self._reader() as consumer:
            for message in read(self.kafka, self.topology.topic, ranges(consumer, self.topology.topic,
                                                                         Start(earliest=True)), consumer):
                event = event_of(message)
                if event is not None and saga_id in (event.get("sagaid"), event.get("partitionkey")):
                    found.append((message, event))
        found.sort(key=lambda pair: (pair[0].partition() or 0, pair[0].offset() or 0))
        return found

    def send(self, events: Sequence[CloudEvent], url: str) -> list[int]:
        """POST each event, in order, to `url` (binary mode, no retries); the statuses."""
        target = Trigger(name="saga-events", group="", filter={}, url=url, delivery=Delivery(timeout=30.0))
        sink = Deliverer(target, self.client)
        return [sink.deliver(event).status for event in events]

    # --- helpers ---
    def _reader(self, group: str | None = None) -> _Closing:
        return _Closing(self.kafka.consumer(group))


class _Passed:
    """Progress in offsets, the unit of the plan (`Range.size`): transactional writers leave commit
    markers, which take offsets but are never handed to a reader, so counting records alone would end
    short of the plan. A record counts with the markers before it; the markers after each partition's
    last record count when the whole range has been read."""

    def __init__(self, spans: Sequence[Range], progress: Progress) -> None:
        self.spans = spans
        self.progress = progress
        self.next = {span.partition: span.start for span in spans}  # one writer per partition (its lane)

    def record(self, message: Message) -> None:
        partition, offset = message.partition() or 0, message.offset() or 0
        self.progress(max(1, offset + 1 - self.next[partition]))
        self.next[partition] = offset + 1

    def all(self) -> None:
        self.progress(sum(max(0, span.end - self.next[span.partition]) for span in self.spans))


class _Closing:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer

    def __enter__(self) -> Consumer:
        return self.consumer

    def __exit__(self, *_: object) -> None:
        self.consumer.close()


def _from_committed(consumer: Consumer, topic: str, spans: list[Range]) -> list[Range]:
    committed = consumer.committed([TopicPartition(topic, s.partition) for s in spans], timeout=20)
    start = {tp.partition: tp.offset for tp in committed if tp.offset != OFFSET_INVALID}
    return [Range(s.partition, max(s.start, start.get(s.partition, s.start)), s.end) for s in spans]


# --- waiting for the Triggers ---
class ConsumedWatch:
    """Whether every Trigger's consumer group has consumed a topic up to given offsets.

    A group's committed offset can stay below the partition's end for good: transactional writers
    (the dispatcher) leave a commit marker after their last record, which no consumer is handed. So
    "caught up" is "no committed record between the group's offset and the target", checked by
    reading there when the offsets alone do not say.
    """

    def __init__(self, topology: Topology, kafka: Kafka) -> None:
        self.topology = topology
        self.kafka = kafka
        self.admin = AdminClient({"bootstrap.servers": topology.bootstrap, "log_level": 3})
        self._probe = kafka.consumer()
        self._empty: set[tuple[int, int, int]] = set()

    def close(self) -> None:
        self._probe.close()

    def targets(self) -> dict[int, int]:
        """The broker topic's end in each partition, now."""
        topic = self.topology.topic
        return {p: self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=20)[1]
                for p in partitions(self._probe, topic)}

    def behind(self, targets: dict[int, int]) -> int:
        """Records (offsets) still to be consumed by any Trigger to reach `targets`; 0 when done."""
        topic = self.topology.topic
        total = 0
        for trigger in self.topology.triggers:
            request = ConsumerGroupTopicPartitions(trigger.group, [TopicPartition(topic, p) for p in targets])
            result = self.admin.list_consumer_group_offsets([request])[trigger.group].result(timeout=20)
            committed = {tp.partition: tp.offset for tp in result.topic_partitions}
            for partition, target in targets.items():
                offset = committed.get(partition, OFFSET_INVALID)
                if offset == OFFSET_INVALID:
                    offset = self._probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=20)[0]
                if offset < target and self._holds_records(partition, offset, target):
                    total += target - offset
        return total

    def _holds_records(self, partition: int, start: int, end: int) -> bool:
        key = (partition, start, end)
        if key in self._empty:
            return False
        try:
            holds = any(True for _ in read(self.kafka, self.topology.topic, [Range(partition, start, end)]))
        except TimeoutError:
            return True
        if not holds:
            self._empty.add(key)
        return holds

    def wait(self, targets: dict[int, int], timeout: float, progress: Callable[[int, int], None]) -> None:
        """Block until `behind(targets)` is 0; `progress(done, total)` after each look."""
        deadline = time.monotonic() + timeout
        first = None
        while True:
            left = self.behind(targets)
            first = left if first is None else max(first, left)
            progress(first - left, first)
            if left == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the Triggers are still {left} record(s) behind after {timeout:.0f} s")
            time.sleep(0.2)

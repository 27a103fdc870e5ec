"""The Kafka broker's Trigger dispatcher, played locally (its own process: `python -m
localstack.dispatcher CONFIG`, so tests can kill and restart it).

Per Trigger: a consumer group on the broker topic, the Trigger's exact-attribute filter, delivery
as Knative's dispatcher does it (binary-mode POST with `Prefer: reply`; retry on 5xx, 404, 408,
409, 429 and network errors with the Trigger's backoff; other 4xx and non-CloudEvent 2xx bodies to
the dead-letter topic; a CloudEvent in a 2xx answer is the reply). Ordered Triggers deliver one
event at a time per partition; partitions proceed in parallel.

Unlike Knative's dispatcher, replies, dead letters and the consumed offsets of each poll batch are
committed in one Kafka transaction: a crash of this process never writes a reply twice nor loses
one (a subscriber may see an event again, and deduplicates it).
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http
from cloudevents.kafka import KafkaMessage, from_binary
from cloudevents.kafka import to_binary as to_kafka
from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

log = logging.getLogger("dispatcher")

RETRYABLE = frozenset({404, 408, 409, 429})
BATCH = 500
ERROR_DATA_LIMIT = 1024


@dataclass(frozen=True)
class TriggerConfig:
    name: str
    group: str
    filter: dict[str, str]
    url: str
    retry: int
    backoff_policy: str
    backoff_delay: float
    timeout: float
    dead_letter_topic: str | None
    ordered: bool


@dataclass(frozen=True)
class DispatcherConfig:
    bootstrap: str
    topic: str
    triggers: tuple[TriggerConfig, ...]
    ready_file: str | None = None

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> DispatcherConfig:
        raw = json.loads(path.read_text())
        return cls(
            bootstrap=raw["bootstrap"], topic=raw["topic"], ready_file=raw.get("ready_file"),
            triggers=tuple(TriggerConfig(**t) for t in raw["triggers"]),
        )


@dataclass(frozen=True)
class Record:
    """Something to write in the batch's transaction: a reply or a dead letter."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def matches(event: CloudEvent, wanted: dict[str, str]) -> bool:
    # Exact match on attributes and extensions; an empty value matches anything (Knative's rule).
    return all(value == "" or str(event.get(name, "")) == value for name, value in wanted.items())


def backoff(trigger: TriggerConfig, attempt: int) -> float:
    """Delay before retry `attempt` (1-based): linear delay x n, exponential delay x 2^n."""
    if trigger.backoff_policy == "linear":
        return trigger.backoff_delay * attempt
    return trigger.backoff_delay * (2**attempt)


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def kafka_record(event: CloudEvent, topic: str) -> Record:
    """The event in Kafka's binary mode (record key = its `partitionkey`)."""
    if "datacontenttype" not in event:  # the Kafka binding needs it for the content-type header
        event["datacontenttype"] = "application/json"
    message = to_kafka(event)
    headers = {name: _bytes(v) or b"" for name, v in message.headers.items()}
    return Record(topic, _bytes(message.key), _bytes(message.value), headers)


class TriggerWorker(threading.Thread):
    def __init__(self, config: DispatcherConfig, trigger: TriggerConfig, stop: threading.Event) -> None:
        super().__init__(name=f"trigger-{trigger.name}", daemon=True)
        self.config = config
        self.trigger = trigger
        self.stop = stop
        self.assigned = threading.Event()
        self.client = httpx.Client(timeout=trigger.timeout, limits=httpx.Limits(max_connections=32))
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"deliver-{trigger.name}")

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
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": 10,
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
        try:
            producer.init_transactions(30)
            consumer.subscribe([self.config.topic], on_assign=lambda c, partitions: self.assigned.set())
            while not self.stop.is_set():
                # consume(n, timeout) waits for n messages or the timeout: wait for one, then take
                # whatever else is already there, so an event never waits for a batch to fill.
                first = consumer.poll(0.1)
                if first is None:
                    continue
                messages = [m for m in [first, *consumer.consume(BATCH - 1, timeout=0)] if m.error() is None]
                if messages:
                    self._dispatch_batch(consumer, producer, messages)
        finally:
            consumer.close()

    def _dispatch_batch(self, consumer: Consumer, producer: Producer, messages: list[Message]) -> None:
        by_partition: dict[int, list[Message]] = defaultdict(list)
        for message in messages:
            by_partition[message.partition() or 0].append(message)
        if self.trigger.ordered:
            jobs = [self.pool.submit(lambda ms: [r for m in ms for r in self._handle(m)], ms)
                    for ms in by_partition.values()]
        else:
            jobs = [self.pool.submit(self._handle, m) for m in messages]
        records: list[Record] = []
        for job in jobs:
            records.extend(job.result())
        offsets = [TopicPartition(self.config.topic, p, (ms[-1].offset() or 0) + 1) for p, ms in by_partition.items()]
        producer.begin_transaction()
        try:
            for record in records:
                producer.produce(record.topic, value=record.value, key=record.key, headers=list(record.headers.items()))
            producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        except KafkaException:
            producer.abort_transaction(30)
            raise

    def _handle(self, message: Message) -> list[Record]:
        headers = {str(k): _bytes(v) or b"" for k, v in (message.headers() or [])}  # type: ignore[str-unpack]
        try:
            event = from_binary(KafkaMessage(headers=headers, key=message.key(), value=message.value() or b""))
        except Exception:
            log.error("%s: offset %s is not a CloudEvent; skipped", self.trigger.name, message.offset())
            return []
        if not matches(event, self.trigger.filter):
            return []
        return self._deliver(event)

    def _deliver(self, event: CloudEvent) -> list[Record]:
        trigger = self.trigger
        headers, body = to_binary(event)
        headers = {**headers, "Prefer": "reply"}
        code, answer = 0, b""
        for attempt in range(trigger.retry + 1):
            if attempt:
                time.sleep(backoff(trigger, attempt))
            try:
                response = self.client.post(trigger.url, headers=headers, content=body)
            except httpx.HTTPError as exc:
                code, answer = 0, str(exc).encode()
                continue
            code, answer = response.status_code, response.content
            if 200 <= code < 300:
                if not answer:
                    return []
                try:
                    reply = from_http(dict(response.headers), answer)
                except CloudEventError:
                    break  # a 2xx body that is not a CloudEvent is a failed delivery
                return [kafka_record(reply, self.config.topic)]
            if code < 500 and code not in RETRYABLE:
                break
        return self._dead_letter(event, code, answer)

    def _dead_letter(self, event: CloudEvent, code: int, answer: bytes) -> list[Record]:
        trigger = self.trigger
        log.error("%s: event %s (%s) dead-lettered after status %s", trigger.name, event["id"], event["type"], code)
        if trigger.dead_letter_topic is None:
            return []  # Knative drops it too, committing the offset
        parked = CloudEvent(
            {
                **event.get_attributes(),
                "knativeerrordest": trigger.url,
                "knativeerrorcode": str(code),
                "knativeerrordata": base64.b64encode(answer[:ERROR_DATA_LIMIT]).decode(),
            },
            event.get_data(),
        )
        return [kafka_record(parked, trigger.dead_letter_topic)]


def run(config: DispatcherConfig, stop: threading.Event) -> None:
    workers = [TriggerWorker(config, trigger, stop) for trigger in config.triggers]
    for worker in workers:
        worker.start()
    deadline = time.monotonic() + 60
    while not stop.is_set() and not all(w.assigned.is_set() for w in workers) and time.monotonic() < deadline:
        stop.wait(0.05)
    if config.ready_file:
        Path(config.ready_file).write_text(str(time.time()))
    log.info("dispatching %d trigger(s)", len(workers))
    stop.wait()
    for worker in workers:
        worker.join(timeout=10)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(DispatcherConfig.read(Path(sys.argv[1])), stop)


if __name__ == "__main__":
    main()


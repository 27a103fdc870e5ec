"""The local Trigger dispatcher on real Kafka, as Knative's: retry and dead-letter rules, filters,
per-partition order for ordered Triggers and a bounded window for unordered ones, offsets committed
on a timer up to the first record not done, and no reply lost across a SIGKILL of the process (a
reply may be written twice then: at-least-once, absorbed by the inboxes of the functions)."""

from __future__ import annotations

import base64
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from cloudevents.kafka import KafkaMessage, from_binary
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from localstack.dispatcher import MAX_IN_FLIGHT
from localstack.infra import Infra
from localstack.process import Child, start_child, wait_until
from saga.eventing.records import kafka_record
from saga.eventing.topology import Delivery, Topology, Trigger
from tests.integration.subscriber import Answer, Subscriber

pytestmark = pytest.mark.integration

class Rig:
    """A broker topic, a dead-letter topic and one dispatcher process for one Trigger."""

    def __init__(self, infra: Infra, tmp: Path, subscriber: Subscriber, **trigger: object) -> None:
        self.infra = infra
        suffix = uuid.uuid4().hex[:8]
        self.topic, self.dead_letters = f"test-broker-{suffix}", f"test-dlq-{suffix}"
        admin = AdminClient({"bootstrap.servers": infra.kafka_bootstrap})
        for future in admin.create_topics([NewTopic(self.topic, 4, 1), NewTopic(self.dead_letters, 1, 1)]).values():
            future.result(timeout=30)
        self.group = f"knative-trigger-test-{suffix}"
        settings: dict[str, object] = {
            "name": f"t-{suffix}", "group": self.group, "filter": {"type": "test.event"},
            "url": subscriber.url, "ordered": True,
        }
        delivery = {"retry": 3, "backoff_policy": "exponential", "backoff_delay": 0.02, "timeout": 10.0,
                    "dead_letter_topic": self.dead_letters}
        delivery.update({k: trigger.pop(k) for k in list(trigger) if k in delivery})
        settings.update(trigger, delivery=Delivery(**delivery))  # type: ignore[arg-type]
        self.ready = tmp / f"ready-{suffix}"
        self.config_file = tmp / f"dispatcher-{suffix}.json"
        self.log = tmp / f"dispatcher-{suffix}.log"
        Topology(
            bootstrap=infra.kafka_bootstrap, topic=self.topic,
            triggers=(Trigger(**settings),),  # type: ignore[arg-type]
        ).dump(self.config_file)
        self.process: Child | None = None
        self.producer = Producer({"bootstrap.servers": infra.kafka_bootstrap, "enable.idempotence": True})

    def start(self) -> None:
        self.ready.unlink(missing_ok=True)
        self.process = start_child("dispatcher", [sys.executable, "-m", "localstack.dispatcher",
                                                  str(self.config_file), str(self.ready)], self.log)
        wait_until(self.ready.exists, timeout=60, what="test dispatcher", alive=self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def uncommitted(self) -> int:
        """Offsets of the broker topic that the Trigger's consumer group has not committed."""
        consumer = Consumer({"bootstrap.servers": self.infra.kafka_bootstrap, "group.id": self.group})
        try:
            partitions = [TopicPartition(self.topic, p) for p in range(4)]
            committed = consumer.committed(partitions, timeout=10)
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
            return sum(end - max(tp.offset, 0) for tp, end in zip(committed, ends, strict=True))
        finally:
            consumer.close()

    def send(self, event: CloudEvent) -> None:
        record = kafka_record(event, self.topic)
        self.producer.produce(record.topic, value=record.value, key=record.key, headers=list(record.headers.items()))
        self.producer.flush(10)

    def read(self, topic: str, *, at_least: int, settle: float = 1.0, timeout: float = 30.0) -> list[CloudEvent]:
        """Committed events of `topic`; waits for `at_least`, then `settle` more seconds for extras."""
        consumer = Consumer({
            "bootstrap.servers": self.infra.kafka_bootstrap, "group.id": f"reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        })
        consumer.subscribe([topic])
        events: list[CloudEvent] = []
        deadline, quiet_until = time.monotonic() + timeout, None
        try:
            while time.monotonic() < deadline:
                message = consumer.poll(0.1)
                if message is not None and message.error() is None:
                    headers = {k: v for k, v in message.headers() or []}
                    events.append(from_binary(KafkaMessage(headers=headers, key=message.key(), value=message.value())))
                if len(events) >= at_least:
                    quiet_until = quiet_until or time.monotonic() + settle
                    if time.monotonic() >= quiet_until:
                        break
        finally:
            consumer.close()
        return events


def make_event(key: str = "k", **extensions: str) -> CloudEvent:
    return CloudEvent({"type": "test.event", "source": "/test", "id": str(uuid.uuid4()), "partitionkey": key,
                       "datacontenttype": "application/json", **extensions}, {"n": 1})


@pytest.fixture
def rigs(infra: Infra, tmp_path: Path) -> Iterator[list[Rig]]:
    started: list[Rig] = []
    yield started
    for rig in started:
        rig.stop()


def rig_for(rigs: list[Rig], infra: Infra, tmp: Path, subscriber: Subscriber, **trigger: object) -> Rig:
    rig = Rig(infra, tmp, subscriber, **trigger)
    rigs.append(rig)
    rig.start()
    return rig


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    wait_until(condition, timeout=timeout, what="the expected deliveries", interval=0.05)


def test_failing_subscriber_is_retried_until_it_succeeds(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: (503 if attempt <= 2 else 202, {}, b""))
    rig = rig_for(rigs, infra, tmp_path, subscriber)
    event = make_event()
    rig.send(event)
    wait_for(lambda: subscriber.ids().count(event["id"]) >= 3)
    assert rig.read(rig.dead_letters, at_least=0, settle=1.0) == []
    assert subscriber.ids().count(event["id"]) == 3
    subscriber.close()


def test_exhausted_retries_end_in_the_dead_letter_topic(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: (500, {}, b"boom"))
    rig = rig_for(rigs, infra, tmp_path, subscriber, retry=2)
    event = make_event()
    rig.send(event)
    [parked] = rig.read(rig.dead_letters, at_least=1)
    assert parked["id"] == event["id"]
    assert parked["knativeerrorcode"] == "500"
    assert base64.b64decode(parked["knativeerrordata"]) == b"boom"
    assert parked["knativeerrordest"] == subscriber.url
    assert subscriber.ids().count(event["id"]) == 3, "retry 2 = three attempts in all"
    subscriber.close()


def test_client_error_goes_to_dead_letter_without_retry(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: (400, {}, b"bad"))
    rig = rig_for(rigs, infra, tmp_path, subscriber)
    event = make_event()
    rig.send(event)
    [parked] = rig.read(rig.dead_letters, at_least=1)
    assert parked["knativeerrorcode"] == "400"
    assert subscriber.ids().count(event["id"]) == 1


def test_non_cloudevent_body_is_a_failed_delivery(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: (200, {"Content-Type": "text/plain"}, b"OK"))
    rig = rig_for(rigs, infra, tmp_path, subscriber, retry=0)
    rig.send(make_event())
    [parked] = rig.read(rig.dead_letters, at_least=1)
    assert parked["knativeerrorcode"] == "200"


def reply_to(event: CloudEvent) -> Answer:
    reply = CloudEvent({"type": "test.reply", "source": "/subscriber", "id": f"reply-{event['id']}",
                        "partitionkey": event["partitionkey"]}, {"answers": event["id"]})
    headers, body = to_binary(reply)
    return 200, dict(headers), body


def test_reply_is_written_to_the_broker_topic_once(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: reply_to(event))
    rig = rig_for(rigs, infra, tmp_path, subscriber)
    event = make_event()
    rig.send(event)
    replies = [e for e in rig.read(rig.topic, at_least=2) if e["type"] == "test.reply"]
    assert [r["id"] for r in replies] == [f"reply-{event['id']}"]
    assert replies[0].get_data() == {"answers": event["id"]}


def test_ordered_trigger_keeps_partition_order(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    def slow(event: CloudEvent, attempt: int) -> Answer:
        time.sleep(random.uniform(0, 0.01))
        return 202, {}, b""

    subscriber = Subscriber(slow)
    rig = rig_for(rigs, infra, tmp_path, subscriber)
    sent = [make_event(key="one-saga") for _ in range(50)]
    for event in sent:
        rig.send(event)
    wait_for(lambda: len(subscriber.ids()) >= 50)
    assert subscriber.ids() == [e["id"] for e in sent]
    assert subscriber.most_at_once == 1


def test_filter_delivers_only_matching_events(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    subscriber = Subscriber(lambda event, attempt: (202, {}, b""))
    rig = rig_for(rigs, infra, tmp_path, subscriber, filter={"type": "test.event", "sagatype": "Wanted"})
    wanted, other = make_event(sagatype="Wanted"), make_event(sagatype="Other")
    rig.send(other)
    rig.send(wanted)
    wait_for(lambda: wanted["id"] in subscriber.ids())
    assert other["id"] not in subscriber.ids()


def test_done_offsets_are_committed_and_not_delivered_again(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    """Filtered-out events and deliveries answered with no reply are done at once; their offsets are
    committed at the next commit interval, and a SIGKILLed and restarted dispatcher does not deliver
    them again."""
    subscriber = Subscriber(lambda event, attempt: (202, {}, b""))
    rig = rig_for(rigs, infra, tmp_path, subscriber, filter={"type": "test.event", "sagatype": "Wanted"})
    wanted = [make_event(key=f"k{i}", sagatype="Wanted") for i in range(6)]
    for event in [*wanted, *(make_event(key=f"k{i}", sagatype="Other") for i in range(6))]:
        rig.send(event)
    wait_for(lambda: sorted(subscriber.ids()) == sorted(e["id"] for e in wanted))
    wait_until(lambda: rig.uncommitted() == 0, timeout=20, what="the skipped and reply-less offsets committed")
    assert rig.process is not None
    rig.process.kill()
    rig.start()
    late = make_event(key="k0", sagatype="Wanted")  # delivered after the restart: the dispatcher is consuming
    rig.send(late)
    wait_for(lambda: late["id"] in subscriber.ids())
    assert Counter(subscriber.ids()) == Counter([*(e["id"] for e in wanted), late["id"]])
    assert len(rig.read(rig.topic, at_least=13, settle=0.5)) == 13, "the dispatcher wrote nothing to the topic"
    assert rig.read(rig.dead_letters, at_least=0, settle=0.5) == []
    subscriber.close()


def test_killed_dispatcher_never_loses_a_reply(infra: Infra, tmp_path: Path, rigs: list[Rig]) -> None:
    """SIGKILL mid-stream: every event not yet committed is delivered again, so every event gets its
    reply; an event delivered twice may have its reply written twice, and both are the same event
    (same id), which the step handler's inbox takes once (tests/integration/test_participants.py)."""
    def slow_reply(event: CloudEvent, attempt: int) -> Answer:
        time.sleep(0.02)
        return reply_to(event)

    subscriber = Subscriber(slow_reply)
    rig = rig_for(rigs, infra, tmp_path, subscriber, ordered=False)
    sent = [make_event(key=f"saga-{i % 4}") for i in range(60)]
    for event in sent:
        rig.send(event)
    wait_for(lambda: len(subscriber.ids()) >= 10)
    assert rig.process is not None
    rig.process.kill()  # no chance to commit what it delivered since the last commit
    rig.start()
    wait_for(lambda: {e["id"] for e in sent} <= set(subscriber.ids()), timeout=60)
    replies = [e for e in rig.read(rig.topic, at_least=120) if e["type"] == "test.reply"]
    assert {r["id"] for r in replies} == {f"reply-{e['id']}" for e in sent}, "every event got its reply"
    delivered = Counter(subscriber.ids())
    assert len(replies) <= sum(delivered.values()), "at most one reply per delivery"


def test_unordered_trigger_delivers_concurrently_within_its_window(
    infra: Infra, tmp_path: Path, rigs: list[Rig]
) -> None:
    def held(event: CloudEvent, attempt: int) -> Answer:
        time.sleep(0.3)
        return 202, {}, b""

    subscriber = Subscriber(held)
    rig = rig_for(rigs, infra, tmp_path, subscriber, ordered=False)
    sent = [make_event(key="one-saga") for _ in range(MAX_IN_FLIGHT + 30)]
    for event in sent:
        rig.send(event)
    wait_for(lambda: len(subscriber.ids()) >= len(sent), timeout=60)
    assert sorted(subscriber.ids()) == sorted(e["id"] for e in sent)
    # One partition, yet many at once: the window, not the partition, bounds the Trigger.
    assert 1 < subscriber.most_at_once <= MAX_IN_FLIGHT

"""The replay engine on real Kafka, against recording HTTP subscribers: where a replay starts, the
order it delivers in, where replies and failures go, redrive positions, one saga's trace, and the
consumed-check that must see through transaction markers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from localstack.infra import Infra
from saga.eventing.records import event_of, kafka_record
from saga.eventing.topology import Delivery, Topology, Trigger
from saga.replay.engine import ConsumedWatch, Replayer
from saga.replay.positions import Start
from tests.integration.subscriber import Answer, Subscriber

pytestmark = pytest.mark.integration

PARTITIONS = 4


class Topics:
    def __init__(self, infra: Infra) -> None:
        self.infra = infra
        suffix = uuid.uuid4().hex[:8]
        self.broker, self.dead_letters = f"replay-broker-{suffix}", f"replay-dlq-{suffix}"
        self.admin = AdminClient({"bootstrap.servers": infra.kafka_bootstrap})
        for future in self.admin.create_topics([NewTopic(self.broker, PARTITIONS, 1),
                                                NewTopic(self.dead_letters, 1, 1)]).values():
            future.result(timeout=30)
        self.producer = Producer({"bootstrap.servers": infra.kafka_bootstrap, "enable.idempotence": True})

    def send(self, *events: CloudEvent, topic: str | None = None) -> None:
        for event in events:
            record = kafka_record(event, topic or self.broker)
            self.producer.produce(record.topic, value=record.value, key=record.key,
                                  headers=list(record.headers.items()))
        assert self.producer.flush(30) == 0

    def read(self, topic: str) -> list[CloudEvent]:
        consumer = Consumer({"bootstrap.servers": self.infra.kafka_bootstrap, "group.id": uuid.uuid4().hex,
                             "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                             "enable.partition.eof": True})
        numbers = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in numbers])
        found, done, deadline = [], set(), time.monotonic() + 20
        while len(done) < len(numbers) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error() is not None:
                done.add(message.partition())
            elif (event := event_of(message)) is not None:
                found.append(event)
        consumer.close()
        return found

    def topology(self, url: str) -> Topology:
        delivery = Delivery(retry=1, backoff_delay=0.01, timeout=10.0, dead_letter_topic=self.dead_letters)
        chosen = Trigger(name="t", group=f"group-{self.broker}", filter={"type": "test.event"}, url=url,
                         delivery=delivery, ordered=True)
        return Topology(self.infra.kafka_bootstrap, self.broker, (chosen,), (self.dead_letters,))

    def delete(self) -> None:
        for future in self.admin.delete_topics([self.broker, self.dead_letters]).values():
            future.result(timeout=30)


@pytest.fixture
def topics(infra: Infra) -> Iterator[Topics]:
    made = Topics(infra)
    yield made
    made.delete()


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    accepting = Subscriber(lambda event, attempt: (202, {}, b""))
    yield accepting
    accepting.close()


def event(key: str, n: int, **extensions: str) -> CloudEvent:
    return CloudEvent({"type": "test.event", "source": "/test", "id": f"{key}-{n}-{uuid.uuid4().hex[:6]}",
                       "partitionkey": key, **extensions}, {"n": n})


def by_key(events: list[CloudEvent]) -> dict[str, list[str]]:
    keyed: dict[str, list[str]] = {}
    for e in events:
        keyed.setdefault(e["partitionkey"], []).append(e["id"])
    return keyed


def test_replay_from_a_time_delivers_only_later_events_in_partition_order(topics: Topics,
                                                                          subscriber: Subscriber) -> None:
    older = [event(f"k{i % 6}", i) for i in range(30)]
    topics.send(*older)
    time.sleep(0.01)  # record timestamps are milliseconds: the boundary must fall between the batches
    boundary = datetime.now(UTC)
    newer = [event(f"k{i % 6}", i) for i in range(30, 90)]
    topics.send(*newer, event("k1", 99, type="other.type"))
    replayer = Replayer(topics.topology(subscriber.url))
    try:
        plan = replayer.replay(replayer.topology.triggers, Start(time=boundary), dry_run=True)["t"]
        assert (plan.matched, plan.delivered, dict(plan.types)) == (60, 0, {"test.event": 60})
        assert subscriber.ids() == [], "a dry run delivers nothing"
        done = replayer.replay(replayer.topology.triggers, Start(time=boundary))["t"]
    finally:
        replayer.close()
    assert (done.matched, done.delivered, done.dead_lettered) == (60, 60, 0)
    assert sorted(subscriber.ids()) == sorted(e["id"] for e in newer)
    assert by_key(subscriber.deliveries) == by_key(newer), "each key (partition) in the order it was written"


def test_replay_from_earliest_and_from_an_offset(topics: Topics, subscriber: Subscriber) -> None:
    sent = [event("one-key", i) for i in range(10)]
    topics.send(*sent)
    replayer = Replayer(topics.topology(subscriber.url))
    try:
        assert replayer.replay(replayer.topology.triggers, Start.parse("7"))["t"].delivered == 3
        assert subscriber.ids() == [e["id"] for e in sent[7:]]
        assert replayer.replay(replayer.topology.triggers, Start.parse("earliest"))["t"].delivered == 10
    finally:
        replayer.close()
    assert subscriber.ids()[3:] == [e["id"] for e in sent]


def test_replies_go_to_the_broker_topic_and_failures_to_dead_letters_then_redrive(topics: Topics) -> None:
    broken = {"yes": True}

    def answer(delivered: CloudEvent, attempt: int) -> Answer:
        if broken["yes"] and delivered.get_data()["n"] % 2:
            return 400, {}, b"cannot read odd numbers"
        reply = CloudEvent({"type": "test.reply", "source": "/subscriber", "id": f"reply-{delivered['id']}",
                            "partitionkey": delivered["partitionkey"]}, {})
        headers, body = to_binary(reply)
        return 200, dict(headers), body

    subscriber = Subscriber(answer)
    sent = [event("k", i) for i in range(6)]
    topics.send(*sent)
    replayer = Replayer(topics.topology(subscriber.url))
    try:
        tally = replayer.replay(replayer.topology.triggers, Start(earliest=True))["t"]
        assert (tally.delivered, tally.replies, tally.dead_lettered) == (3, 3, 3)
        replies = [e for e in topics.read(topics.broker) if e["type"] == "test.reply"]
        assert sorted(r["id"] for r in replies) == sorted(f"reply-{e['id']}" for e in sent[0::2])
        parked = topics.read(topics.dead_letters)
        assert sorted(p["id"] for p in parked) == sorted(e["id"] for e in sent[1::2])
        assert {p["knativeerrorcode"] for p in parked} == {"400"}

        broken["yes"] = False  # the fix
        before = len(subscriber.ids())
        redriven = replayer.redrive(replayer.topology.triggers)["t"]
        assert (redriven.matched, redriven.delivered, redriven.dead_lettered) == (3, 3, 0)
        again = subscriber.deliveries[before:]
        assert sorted(e["id"] for e in again) == sorted(e["id"] for e in sent[1::2])
        assert not any("knativeerrorcode" in e for e in again), "delivered as it was before it was parked"
        assert replayer.redrive(replayer.topology.triggers)["t"].matched == 0, "the position is remembered"
        assert replayer.redrive(replayer.topology.triggers, Start(earliest=True), dry_run=True)["t"].matched == 3
    finally:
        replayer.close()
        subscriber.close()


def test_one_sagas_events_in_order_to_a_sink(topics: Topics, subscriber: Subscriber) -> None:
    mine = [event("saga-1", i, sagaid="saga-1") for i in range(5)]
    topics.send(mine[0], event("saga-2", 0, sagaid="saga-2"), *mine[1:], event("saga-3", 0, sagaid="saga-3"))
    replayer = Replayer(topics.topology(subscriber.url))
    try:
        found = [e for _, e in replayer.saga_events("saga-1")]
        assert [e["id"] for e in found] == [e["id"] for e in mine]
        assert replayer.send(found, subscriber.url) == [202] * 5
    finally:
        replayer.close()
    assert subscriber.ids() == [e["id"] for e in mine]


def test_consumed_watch_sees_through_transaction_markers(topics: Topics, infra: Infra) -> None:
    transactional = Producer({"bootstrap.servers": infra.kafka_bootstrap, "transactional.id": uuid.uuid4().hex})
    transactional.init_transactions(30)
    transactional.begin_transaction()
    for i in range(3):
        record = kafka_record(event("k", i), topics.broker)
        transactional.produce(record.topic, value=record.value, key=record.key, partition=0,
                              headers=list(record.headers.items()))
    transactional.commit_transaction(30)
    topology = topics.topology("http://127.0.0.1:9/")
    group = topology.triggers[0].group
    replayer = Replayer(topology)
    watch = ConsumedWatch(topology, replayer.kafka)
    try:
        targets = watch.targets()
        assert targets[0] == 4, "three records and the commit marker"
        assert watch.behind(targets) == 4, "a group that consumed nothing is behind"
        committer = Consumer({"bootstrap.servers": infra.kafka_bootstrap, "group.id": group})
        committer.commit(offsets=[TopicPartition(topics.broker, 0, 2)], asynchronous=False)
        assert watch.behind(targets) == 2, "one record is still to be consumed"
        # What a consumer commits after the last record: its offset + 1, short of the marker.
        committer.commit(offsets=[TopicPartition(topics.broker, 0, 3)], asynchronous=False)
        committer.close()
        assert watch.behind(targets) == 0
    finally:
        watch.close()
        replayer.close()

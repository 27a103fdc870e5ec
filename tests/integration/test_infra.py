"""The project's own Kafka and PostgreSQL are real and set up as the saga needs them."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from localstack.infra import Infra

pytestmark = pytest.mark.integration


def read_all(infra: Infra, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    consumer = Consumer({
        "bootstrap.servers": infra.kafka_bootstrap, "group.id": f"test-{uuid.uuid4()}",
        "auto.offset.reset": "earliest", "isolation.level": "read_committed",
    })
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(values) < expected:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
        # Drain a little longer: anything beyond `expected` would be a bug we want to see.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                values.append(message.value())
    finally:
        consumer.close()
    return values


def test_aborted_transaction_is_invisible_to_read_committed_consumers(infra: Infra) -> None:
    topic = f"test-tx-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": infra.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=20)
    producer = Producer({"bootstrap.servers": infra.kafka_bootstrap, "transactional.id": f"tx-{topic}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"aborted", key=b"k")
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed", key=b"k")
    producer.commit_transaction(30)
    assert read_all(infra, topic, expected=1) == [b"committed"]


def test_topics_are_never_created_by_accident(infra: Infra) -> None:
    producer = Producer({"bootstrap.servers": infra.kafka_bootstrap, "message.timeout.ms": 3000})
    errors: list[object] = []
    producer.produce(f"missing-{uuid.uuid4().hex[:8]}", b"x", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(10)
    assert len(errors) == 1 and errors[0] is not None, "producing to a missing topic must fail"


def test_postgres_serves_the_saga_database_and_role(infra: Infra) -> None:
    engine = sa.create_engine(infra.database_url)
    with engine.connect() as conn:
        user, database = conn.execute(sa.text("SELECT current_user, current_database()")).one()
    engine.dispose()
    assert (user, database) == ("saga", "saga")

"""The dispatcher's defences against librdkafka going silent (both seen in chaos runs after a broker
restart): a Kafka call blocked far past its timeout is reported as hung, and the watchdog then ends the
process; a fatal error delivered as a message ends the consumer, which starts over."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from localstack.dispatcher import KAFKA_CALL_HUNG, TriggerWorker, is_fatal
from saga.eventing.topology import Topology, Trigger


@pytest.fixture
def worker() -> TriggerWorker:
    trigger = Trigger(name="t", group="g", filter={"type": "test.event"}, url="http://127.0.0.1:9")
    return TriggerWorker(Topology(bootstrap="127.0.0.1:9", topic="t", triggers=(trigger,)), trigger,
                         threading.Event())


def test_a_call_blocked_past_twice_its_timeout_is_hung(worker: TriggerWorker) -> None:
    with worker.blocking("send_offsets_to_transaction"):
        assert worker.hung() is None  # under way, within its timeout
        worker.kafka_call = ("send_offsets_to_transaction", time.monotonic() - KAFKA_CALL_HUNG - 1)
        assert worker.hung() == "send_offsets_to_transaction"
    assert worker.kafka_call is None and worker.hung() is None  # returned: nothing blocked


def test_the_mark_is_cleared_when_the_call_raises(worker: TriggerWorker) -> None:
    with pytest.raises(KafkaException), worker.blocking("commit"):
        raise KafkaException(KafkaError(KafkaError._WAIT_COORD))
    assert worker.kafka_call is None


def test_a_fatal_error_is_fatal_with_or_without_its_flag() -> None:
    assert is_fatal(KafkaError(KafkaError._FATAL, "static consumer fenced"))  # as a message carries it
    assert is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True))  # as an exception carries it
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT, "broker down"))  # librdkafka reconnects by itself
    assert not is_fatal(KafkaError(KafkaError._PARTITION_EOF))

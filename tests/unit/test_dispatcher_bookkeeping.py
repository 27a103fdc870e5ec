"""The dispatcher's bookkeeping, without Kafka: where each partition's commit may go, and its
defences against librdkafka going silent (both seen in chaos runs after a broker restart): a Kafka
call blocked far past its timeout is reported as hung, and the watchdog then ends the process; a fatal
error delivered as a message ends the consumer, which starts over."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from localstack.bookkeeping import KAFKA_CALL_HUNG, KafkaCallWatch, PartitionProgress, is_fatal


def test_the_commit_point_stops_at_the_first_record_not_done() -> None:
    progress = PartitionProgress()
    assert progress.commit_point() is None  # nothing taken: nothing to commit
    for offset in (10, 11, 12):
        progress.take(offset, deliver=True)
    progress.take(13, deliver=False)  # filtered out: done as it is taken
    assert progress.commit_point() == 10
    progress.done(11)
    progress.done(12)
    assert progress.commit_point() == 10, "11 and 12 are done, but 10 is still in flight"
    progress.done(10)
    assert progress.commit_point() == 14, "everything taken is done: commit past the last one"
    progress.take(14, deliver=True)
    assert progress.commit_point() == 14


def test_a_call_blocked_past_twice_its_timeout_is_hung() -> None:
    watch = KafkaCallWatch()
    with watch.blocking("commit"):
        assert watch.hung() is None  # under way, within its timeout
        watch.call = ("commit", time.monotonic() - KAFKA_CALL_HUNG - 1)
        assert watch.hung() == "commit"
    assert watch.call is None and watch.hung() is None  # returned: nothing blocked


def test_the_mark_is_cleared_when_the_call_raises() -> None:
    watch = KafkaCallWatch()
    with pytest.raises(KafkaException), watch.blocking("commit"):
        raise KafkaException(KafkaError(KafkaError._WAIT_COORD))
    assert watch.call is None


def test_a_fatal_error_is_fatal_with_or_without_its_flag() -> None:
    assert is_fatal(KafkaError(KafkaError._FATAL, "static consumer fenced"))  # as a message carries it
    assert is_fatal(KafkaError(KafkaError.FENCED_INSTANCE_ID, fatal=True))  # as an exception carries it
    assert not is_fatal(KafkaError(KafkaError._TRANSPORT, "broker down"))  # librdkafka reconnects by itself
    assert not is_fatal(KafkaError(KafkaError._PARTITION_EOF))

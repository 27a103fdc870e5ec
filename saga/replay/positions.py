"""Where a replay starts and ends in each partition of a topic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, TopicPartition

EARLIEST = "earliest"


@dataclass(frozen=True)
class Start:
    """`earliest`, an RFC 3339 time, or an offset applied to every partition."""

    earliest: bool = False
    time: datetime | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> Start:
        if text == EARLIEST:
            return cls(earliest=True)
        if text.isdigit():
            return cls(offset=int(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither `earliest`, an RFC 3339 time nor an offset") from None
        if moment.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone (write Z or +01:00)")
        return cls(time=moment)

    def __str__(self) -> str:
        if self.earliest:
            return EARLIEST
        return self.time.isoformat() if self.time is not None else str(self.offset)


@dataclass(frozen=True)
class Range:
    partition: int
    start: int  # first offset to read
    end: int  # the partition's end (high watermark) when the replay began: read up to, not including

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def partitions(consumer: Consumer, topic: str, timeout: float = 20.0) -> list[int]:
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise LookupError(f"topic {topic} does not exist")
    return sorted(metadata.partitions)


def ranges(consumer: Consumer, topic: str, start: Start, timeout: float = 20.0) -> list[Range]:
    """Per partition, from `start` to the end as it is now; empty ranges are left out."""
    found = []
    numbers = partitions(consumer, topic, timeout)
    by_time: dict[int, int] = {}
    if start.time is not None:
        wanted = [TopicPartition(topic, p, int(start.time.timestamp() * 1000)) for p in numbers]
        by_time = {tp.partition: tp.offset for tp in consumer.offsets_for_times(wanted, timeout=timeout)}
    for number in numbers:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=timeout)
        if start.time is not None:
            first = by_time[number] if by_time[number] >= 0 else high  # -1: nothing at or after that time
        elif start.offset is not None:
            first = min(max(start.offset, low), high)
        else:
            first = low
        if first < high:
            found.append(Range(number, first, high))
    return found

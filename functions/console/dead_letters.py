"""Dead letters for the console: those a redrive would take now, each with the error it was parked with,
and the redrive itself, which is `saga replay --dead-letters [--trigger NAME]` (saga.replay.engine): the
same reader, the same position per Trigger, the same delivery rules. Blocking (Kafka and HTTP clients):
the console runs these off its event loop. confluent-kafka is imported here only, when one is asked for.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from functions.console.config import ConsoleSettings
from saga.eventing.topology import Topology, TopologyError, Trigger, from_kubernetes

LISTED = 200  # the newest this many are listed; the count says how many there are
ROUTING_TTL_SECONDS = 30.0  # the routing is read again after this long (in a cluster: three API server calls)
ERROR_TEXT = 600  # characters of a subscriber's answer shown


class Unreachable(Exception):
    """The dead letters cannot be read or redriven now: no routing here, or Kafka (or the API server) did
    not answer. Nothing was changed that a second try would not redo safely (handlers are idempotent)."""


@contextmanager
def reaching(what: str) -> Iterator[None]:
    """Kafka's, the routing's and the replay's own failures as one `Unreachable`."""
    from confluent_kafka import KafkaException

    try:
        yield
    except (KafkaException, TopologyError, LookupError, TimeoutError, RuntimeError, OSError) as exc:
        raise Unreachable(f"{what}: {exc}") from exc


def topology(config: ConsoleSettings) -> Topology:
    """The routing `saga replay` would use: the local stack's file, or the Broker from the Kubernetes API."""
    if config.replay_topology is not None:
        return Topology.read(config.replay_topology)
    if config.replay_broker and config.kafka_bootstrap:
        namespace, _, name = config.replay_broker.partition("/")
        return from_kubernetes(namespace, name, config.kafka_bootstrap)
    raise Unreachable("no routing: set SAGA_REPLAY_TOPOLOGY, or SAGA_REPLAY_BROKER and KAFKA_BOOTSTRAP_SERVERS")


class Routing:
    """`topology(config)`, kept ROUTING_TTL_SECONDS: an open page asks for the dead letters every few seconds,
    the Triggers change with a deploy."""

    def __init__(self, config: ConsoleSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._read: tuple[float, Topology] | None = None

    def get(self) -> Topology:
        with self._lock:
            if self._read is None or self._clock() - self._read[0] > ROUTING_TTL_SECONDS:
                self._read = (self._clock(), topology(self._config))
            return self._read[1]


def redrivable(routing: Topology) -> list[Trigger]:
    """The Triggers that park their failures, as `saga replay --dead-letters` takes them."""
    return [t for t in routing.triggers if t.delivery.dead_letter_topic]


def names(routing: Topology) -> list[str]:
    return [trigger.name for trigger in redrivable(routing)]


def parked(routing: Topology) -> dict[str, Any]:
    """What a redrive of every Trigger would deliver now, newest first (at most LISTED), with its error."""
    from saga.eventing.records import event_of
    from saga.replay.engine import Replayer, read
    from saga.replay.positions import Range, Start, ranges

    replayer = Replayer(routing)
    found: list[dict[str, Any]] = []
    try:
        for trigger in redrivable(routing):
            topic = trigger.delivery.dead_letter_topic
            assert topic is not None
            # Read as the redrive reads: under the Trigger's redrive group, from its committed position.
            with replayer._reader(f"{trigger.group}-redrive") as consumer:
                spans = ranges(consumer, topic, Start(earliest=True))
                committed = consumer.committed(_partitions(topic, spans), timeout=20)
                start = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
                spans = [Range(s.partition, max(s.start, start.get(s.partition, s.start)), s.end) for s in spans]
                for message in read(replayer.kafka, topic, spans, consumer):
                    event = event_of(message)
                    # The rule the redrive applies (a dead letter is its Trigger's, or the one that takes it).
                    if event is not None and replayer._belongs(event, trigger):
                        found.append(_letter(trigger, message, event))
    finally:
        replayer.close()
    found.sort(key=lambda letter: letter["parkedAt"] or "", reverse=True)
    return {"count": len(found), "deadLetters": found[:LISTED], "triggers": names(routing)}


def redrive(routing: Topology, trigger: str | None) -> dict[str, Any]:
    """`saga replay --dead-letters [--trigger NAME]`: every parked event delivered again; what fails is
    parked again with its new error. The report's shape is the command's (`--json`)."""
    from saga.replay.engine import Replayer

    triggers = [routing.trigger(trigger)] if trigger is not None else redrivable(routing)
    replayer = Replayer(routing)
    try:
        tallies = replayer.redrive(triggers)
    finally:
        replayer.close()
    rows = {name: tally.as_dict() for name, tally in tallies.items()}
    keys = ("matched", "delivered", "replies", "dead_lettered")
    total = {key: sum(row[key] for row in rows.values()) for key in keys}
    return {"mode": "dead-letters", "from": None, "dry_run": False, "triggers": rows, "total": total}


def _partitions(topic: str, spans: Sequence[Any]) -> list[Any]:
    from confluent_kafka import TopicPartition

    return [TopicPartition(topic, span.partition) for span in spans]


def _letter(trigger: Trigger, message: Any, event: Any) -> dict[str, Any]:
    kind, millis = message.timestamp()
    return {
        "trigger": trigger.name,
        "partition": message.partition(), "offset": message.offset(),
        "parkedAt": datetime.fromtimestamp(millis / 1000, UTC).isoformat() if kind else None,
        "id": event["id"], "type": event["type"], "source": event["source"],
        "sagaId": event.get("sagaid") or event.get("partitionkey"), "sagaType": event.get("sagatype"),
        "errorCode": event.get("knativeerrorcode"), "error": _error_text(event.get("knativeerrordata")),
        "destination": event.get("knativeerrordest"),
    }


def _error_text(data: str | None) -> str | None:
    """The subscriber's answer, kept base64 by the dispatcher (knativeerrordata): a problem's detail when
    it is one, else its text."""
    if not data:
        return None
    try:
        raw = base64.b64decode(data, validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return data[:ERROR_TEXT]
    try:
        problem = json.loads(raw)
    except ValueError:
        return raw[:ERROR_TEXT]
    if isinstance(problem, dict) and isinstance(problem.get("detail"), str):
        title = problem.get("title")
        text = f"{title}: {problem['detail']}" if isinstance(title, str) else problem["detail"]
        return text[:ERROR_TEXT]
    return raw[:ERROR_TEXT]

"""The faults, each injected the way it happens in production: SIGKILL of a function mid-request and
of the dispatcher, a crashed and restarted Kafka broker and PostgreSQL, redeliveries that arrive again
and out of order, a participant frozen (SIGSTOP) beyond its step deadline."""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, Producer, TopicPartition

from chaos.infra import ChaosInfra
from localstack.process import wait_until
from localstack.stack import Stack

log = logging.getLogger("chaos")

KINDS = ("kill-function", "kill-dispatcher", "restart-kafka", "restart-postgres", "redeliver-reordered",
         "slow-participant")
# Every kind of function on a saga's path, in turn: the order API, the step handler, each participant
# (forward and compensation), and auth (logins run beside the orders).
KILLED_IN_TURN = ("order-api", "order-saga", "goods-reserve", "account-reserve-credit", "goods-release",
                  "account-release-credit", "auth-api")
FROZEN_IN_TURN = ("goods-reserve", "account-reserve-credit", "goods-release", "account-release-credit")
REDELIVERED = 24  # records taken from the end of the broker topic per redelivery fault


@dataclass
class Record:
    """What was injected, for the report."""

    by_kind: Counter[str] = field(default_factory=Counter)
    killed: Counter[str] = field(default_factory=Counter)
    killed_mid_request: int = 0
    frozen: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0
    failed: Counter[str] = field(default_factory=Counter)  # faults that could not be injected, per kind
    seconds: dict[str, float] = field(default_factory=dict)  # time spent injecting/recovering, per kind


class Injector:
    def __init__(self, stack: Stack, infra: ChaosInfra, *, freeze_seconds: float) -> None:
        self.stack = stack
        self.infra = infra
        self.freeze_seconds = freeze_seconds
        self.record = Record()
        self._kill_next = itertools.cycle(KILLED_IN_TURN)
        self._freeze_next = itertools.cycle(FROZEN_IN_TURN)

    def inject(self, kind: str) -> None:
        started = time.monotonic()
        getattr(self, "_" + kind.replace("-", "_"))()
        self.record.by_kind[kind] += 1
        spent = self.record.seconds.get(kind, 0.0) + time.monotonic() - started
        self.record.seconds[kind] = round(spent, 1)

    # --- the faults ---
    def _kill_function(self) -> None:
        name = next(self._kill_next)
        gateway = self._gateway()
        function = gateway.functions[name]
        # Wait (briefly) for a request in flight, so the kill lands mid-request when there is traffic.
        deadline = time.monotonic() + 3.0
        while not (mid_request := gateway.busy(name)) and time.monotonic() < deadline:
            time.sleep(0.02)
        process = function.process
        if process is None or not process.alive():
            self._wait_running(name)
            process = function.process
        assert process is not None
        process.kill_group()
        self.record.killed[name] += 1
        self.record.killed_mid_request += mid_request
        log.info("killed %s (pid %s)%s", name, process.pid, " mid-request" if mid_request else "")

    def _kill_dispatcher(self) -> None:
        pid = self.stack.dispatcher_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        # The stack restarts it as Kubernetes would restart its pod; wait until its groups rejoin.
        ready = self.stack.root / "dispatcher.ready"
        wait_until(lambda: self.stack.dispatcher_pid != pid and ready.exists(), timeout=180,
                   what="the dispatcher to be restarted", interval=0.1)
        log.info("killed the dispatcher (pid %s); restarted as %s", pid, self.stack.dispatcher_pid)

    def _restart_kafka(self) -> None:
        self.infra.restart_kafka()
        log.info("Kafka crashed and restarted")

    def _restart_postgres(self) -> None:
        self.infra.restart_postgres()
        log.info("PostgreSQL crashed and restarted")

    def _redeliver_reordered(self) -> None:
        """The last records of the broker topic produced again, newest first: every Trigger sees
        duplicates, out of order, as a redelivery after a lost offset commit would give them."""
        topic = self.stack.topology.topic
        bootstrap = self.stack.infra.kafka_bootstrap
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-redeliver",
                             "enable.auto.commit": False, "isolation.level": "read_uncommitted", "log_level": 2})
        try:
            partitions = consumer.list_topics(topic, timeout=20).topics[topic].partitions
            starts, ends = [], {}
            for number in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=20)
                if high > low:
                    starts.append(TopicPartition(topic, number, max(low, high - REDELIVERED // len(partitions))))
                    ends[number] = high
            consumer.assign(starts)
            taken = []
            deadline = time.monotonic() + 20
            while ends and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    partition, offset = message.partition() or 0, message.offset() or 0
                    if partition in ends and offset < ends[partition]:  # newer ones are not redelivered
                        taken.append(message)
                # Done with a partition once past its end (past a transaction marker, which poll skips).
                for position in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                    if position.offset >= ends[position.partition]:
                        ends.pop(position.partition)
        finally:
            consumer.close()
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "log_level": 2})
        for message in reversed(taken):
            producer.produce(topic, value=message.value(), key=message.key(), partition=message.partition() or 0,
                             headers=message.headers())
        if producer.flush(30) > 0:
            raise RuntimeError("redelivered records not written within 30 s")
        self.record.redelivered += len(taken)
        log.info("redelivered %d record(s), newest first", len(taken))

    def _slow_participant(self) -> None:
        """Freeze every process of a participant beyond the step deadline, then let it go on."""
        name = next(self._freeze_next)
        self._wait_running(name)
        process = self._gateway().functions[name].process
        assert process is not None
        os.killpg(process.pid, signal.SIGSTOP)
        try:
            time.sleep(self.freeze_seconds)  # the fault itself: a participant slower than its deadline
        finally:
            try:
                os.killpg(process.pid, signal.SIGCONT)
            except ProcessLookupError:  # it died while frozen (SIGKILL is the one signal that acts then)
                log.warning("%s (pid %s) was gone when it was to be thawed", name, process.pid)
        self.record.frozen[name] += 1
        log.info("froze %s for %.0f s", name, self.freeze_seconds)

    # --- helpers ---
    def _gateway(self):  # type: ignore[no-untyped-def]
        assert self.stack.gateway is not None
        return self.stack.gateway

    def _wait_running(self, name: str) -> None:
        """Start a function a fault left at zero, as its next request would (the activator's path)."""
        self._gateway().start_function(name)

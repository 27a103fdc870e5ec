"""The faults, each injected the way it happens in production: SIGKILL of a function mid-request and
of the dispatcher, a crashed and restarted Kafka broker and PostgreSQL, redeliveries that arrive again
and out of order, a participant frozen (SIGSTOP) beyond its step deadline; and the items that need a
person: a participant refusing compensations for a while (a stocktake), an outbox event the broker
refuses for good, a saga whose data no longer decodes (repaired and resumed as an operator would)."""

from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import tenacity
from cloudevents.http import CloudEvent
from confluent_kafka import Consumer, Producer, TopicPartition

from chaos.infra import ChaosInfra
from functions.goods.schema import goods
from functions.order.schema import outbox, outbox_parked, saga_instances
from localstack.process import wait_until
from localstack.stack import Stack
from saga.messages import event_to_json

log = logging.getLogger("chaos")

KINDS = ("kill-function", "kill-dispatcher", "restart-kafka", "restart-postgres", "redeliver-reordered",
         "slow-participant", "stocktake", "poison-outbox", "poison-saga")
# The items that need a person take a while each (a poisoned saga is parked after its deadline and the
# sweep's backoff): fewer of them than of the others.
SHARE_OF_FAULTS = {"stocktake": 0.4, "poison-outbox": 0.2, "poison-saga": 0.2}


def faults_wanted(per_kind: int) -> dict[str, int]:
    """How many faults of each kind a run injects."""
    return {kind: max(1, round(per_kind * SHARE_OF_FAULTS.get(kind, 1.0))) for kind in KINDS}


STOCKTAKE_SECONDS = (2.0, 25.0)  # some end within the retry budget, some outlast it (sagas PARKED)
# The order service's functions: a deploy rolls them all. The run starts in the first phase of a two-phase
# rollout (the build knows CancelOrderSaga v2, new cancels still start on v1) and flips halfway.
ORDER_FUNCTIONS = ("order-api", "order-saga", "order-saga-timeouts", "order-outbox-relay")
PHASE_ONE = {"SAGA_START_VERSIONS": "CancelOrderSaga=1"}
POISON_SIZE = 1_500_000  # bytes of data: more than Kafka takes in one record (413 from the broker ingress)
WAIT_PARKED_SECONDS = 120.0
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
    stocktake_seconds: list[float] = field(default_factory=list)
    # (saga type, saga id, when the sweep parked it), on PostgreSQL's clock
    poisoned_sagas: list[tuple[str, str, datetime]] = field(default_factory=list)
    poisoned_events: list[tuple[str, datetime]] = field(default_factory=list)  # (outbox event id, committed at)
    upgraded_after_faults: int | None = None  # when the rollout's second phase came
    failed: Counter[str] = field(default_factory=Counter)  # faults that could not be injected, per kind
    seconds: dict[str, float] = field(default_factory=dict)  # time spent injecting/recovering, per kind


class Injector:
    def __init__(self, stack: Stack, infra: ChaosInfra, db: sa.Engine, resume: Callable[[str, str], int], *,
                 freeze_seconds: float, seed: int) -> None:
        self.stack = stack
        self.infra = infra
        self.db = db
        self.resume = resume  # (saga type, saga id) -> POST /admin/sagas/{id}/resume as the admin; the status
        self.freeze_seconds = freeze_seconds
        self.random = random.Random(seed)
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

    def _stocktake(self) -> None:
        """Every item counted for a while: goods-release refuses every return (FAILURE), so a rejected
        order's compensation is retried with backoff, and one that outlasts the budget parks its saga."""
        seconds = round(self.random.uniform(*STOCKTAKE_SECONDS), 1)
        self._write(sa.update(goods).values(stocktake=True))
        try:
            time.sleep(seconds)  # the fault itself
        finally:
            self._write(sa.update(goods).values(stocktake=False))
        self.record.stocktake_seconds.append(seconds)
        log.info("stocktake for %.1f s", seconds)

    def _poison_outbox(self) -> None:
        """An event the broker refuses for good (larger than Kafka takes) committed to the order outbox:
        the relay parks it at its first refusal, and every row behind it goes on."""
        event = CloudEvent({"type": "io.knativesaga.chaos.poison", "source": "/chaos", "id": str(uuid.uuid4())},
                           {"padding": "x" * POISON_SIZE})
        created_at = self._write(sa.insert(outbox).values(event_id=event["id"], event=event_to_json(event))
                                 .returning(outbox.c.created_at))[0]
        self.record.poisoned_events.append((event["id"], created_at))
        wait_until(lambda: self._read(sa.select(outbox_parked.c.status).where(outbox_parked.c.event_id == event["id"]))
                   is not None, timeout=WAIT_PARKED_SECONDS, what="the poisoned event to be parked", interval=0.2)
        log.info("poisoned the outbox with %s: parked", event["id"])

    def _poison_saga(self) -> None:
        """A saga in flight whose data stops decoding (a field dropped, as a release that changed the data
        class without a migration would leave it): the sweep fails on it alone, backs off and parks it,
        while every other overdue saga goes on. Then it is repaired and resumed, as an operator would."""
        picked = (_in_flight.where(saga_instances.c.data.has_key("customer_id"))
                  .with_for_update(skip_locked=True).cte())
        poison = (sa.update(saga_instances).where(saga_instances.c.saga_id == picked.c.saga_id)
                  .values(data=saga_instances.c.data.op("-")("customer_id"))
                  .where(saga_instances.c.saga_type == picked.c.saga_type)
                  .returning(saga_instances.c.saga_type, saga_instances.c.saga_id, picked.c.customer, sa.func.now()))
        deadline = time.monotonic() + 30
        while (found := self._write(poison)) is None:  # a saga in flight: at 2 orders/s, not every moment
            if time.monotonic() > deadline:
                raise RuntimeError("no saga in flight to poison within 30 s")
            time.sleep(0.02)
        saga_type, saga_id, customer, poisoned_at = found
        parked_at = None

        def parked() -> bool:
            nonlocal parked_at
            row = self._read(sa.select(saga_instances.c.parked_reason, saga_instances.c.finished, sa.func.now())
                             .where(saga_instances.c.saga_id == saga_id, saga_instances.c.saga_type == saga_type))
            if row is not None and row.parked_reason is not None:
                parked_at = row.now
            return parked_at is not None or (row is not None and row.finished)

        try:
            wait_until(parked, timeout=WAIT_PARKED_SECONDS, what=f"poisoned saga {saga_id} to be parked", interval=0.2)
        finally:  # the operator's fix: the field back; then resume
            repaired = saga_instances.c.data.op("||")(sa.func.jsonb_build_object("customer_id", customer))
            self._write(sa.update(saga_instances).values(data=repaired)
                        .where(saga_instances.c.saga_id == saga_id, saga_instances.c.saga_type == saga_type))
        if parked_at is None:
            raise RuntimeError(f"poisoned saga {saga_id} finished without being parked")
        status = self.resume(saga_type, saga_id)
        if status not in (200, 409):  # 409: resumed already (a retried request) or moved on by a late reply
            raise RuntimeError(f"resuming {saga_id} answered {status}")
        self.record.poisoned_sagas.append((saga_type, saga_id, parked_at))
        log.info("poisoned saga %s: parked after %.1f s, repaired and resumed", saga_id,
                 (parked_at - poisoned_at).total_seconds())

    def upgrade(self) -> None:
        """The rollout's second phase, as a Deployment rolls: each order function restarted (SIGKILL, as
        a pod is replaced) without the setting that held new cancels on v1; sagas in flight go on, each
        on the version it started with."""
        gateway = self._gateway()
        for name in ORDER_FUNCTIONS:
            function = gateway.functions[name]
            for setting in PHASE_ONE:
                function.env.pop(setting, None)
            if function.process is not None and function.process.alive():
                function.process.kill_group()
        self.record.upgraded_after_faults = sum(self.record.by_kind.values())
        log.info("rolled the order functions onto new cancels on v2 after %d faults",
                 self.record.upgraded_after_faults)

    # --- helpers ---
    def _write(self, statement: Any) -> Any:
        """Run it in its own transaction, retried while PostgreSQL restarts; the first row returned, if any."""
        for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception_type(sa.exc.OperationalError),
                                         wait=tenacity.wait_fixed(0.5), stop=tenacity.stop_after_delay(60),
                                         reraise=True):
            with attempt, self.db.begin() as tx:
                result = tx.execute(statement)
                return result.first() if result.returns_rows else None
        return None

    def _read(self, statement: Any) -> Any:
        try:
            with self.db.connect() as tx:
                return tx.execute(statement).first()
        except sa.exc.OperationalError:
            return None

    def _gateway(self):  # type: ignore[no-untyped-def]
        assert self.stack.gateway is not None
        return self.stack.gateway

    def _wait_running(self, name: str) -> None:
        """Start a function a fault left at zero, as its next request would (the activator's path)."""
        self._gateway().start_function(name)


# A saga awaiting a participant, not parked: one to poison. Its customer id is kept to repair it.
_in_flight = (sa.select(saga_instances.c.saga_type, saga_instances.c.saga_id,
                        saga_instances.c.data["customer_id"].label("customer"))
              .where(~saga_instances.c.finished, saga_instances.c.parked_reason.is_(None),
                     saga_instances.c.awaiting.is_not(None))
              .order_by(saga_instances.c.updated_at.desc()).limit(1))

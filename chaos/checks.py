"""The checker: after the faults, with the stack quiet, read everything that happened and hold it to
the invariants. Each returns the offending rows (at most a few, for the report); empty means it held."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from chaos.load import Order
from functions.account.schema import credit_reservations
from functions.goods.schema import reservations
from functions.order.schema import orders, outbox_parked, saga_history, saga_instances
from localstack.invariants import unbalanced_books

SAMPLES = 5  # offending rows shown per invariant
# The CreateOrderSaga's steps that have a compensation, and its name: what a rejected saga must undo.
COMPENSATED_STEPS = {0: "reject", 1: "release_goods", 2: "release_credit"}
CREATE, CANCEL = "CreateOrderSaga", "CancelOrderSaga"
ENDED = ("APPROVED", "REJECTED", "CANCELLED")
DONE_ONCE = ("STARTED", "LOCAL_DONE", "COMMAND_SENT", "TIMED_OUT", "COMPENSATING", "COMPENSATION_DONE", "FINISHED")


def not_approved(db: sa.Engine, placed: list[Order], expected: int) -> list[Any]:
    """The orders placed after the faults that did not end APPROVED (all should: right price, stock
    and credit to spare), and a note if fewer than `expected` were accepted at all."""
    with db.connect() as tx:
        rows = tx.execute(sa.select(orders.c.order_id, orders.c.state)
                          .where(orders.c.order_id.in_([o.order_id for o in placed])))
        states = {r.order_id: r.state for r in rows}
    found: list[Any] = [(o.order_id, states.get(o.order_id, "missing")) for o in placed
                        if states.get(o.order_id) != "APPROVED"]
    if len(placed) < expected:
        found.append(f"only {len(placed)} of {expected} accepted")
    return found


def invariants(db: sa.Engine, accepted: Iterable[Order], initial_stock: dict[int, int],
               dead_letters: list[dict[str, str]], expected_parked_events: set[str] | None = None
               ) -> dict[str, list[Any]]:
    """`expected_parked_events`: outbox events the run made unpublishable on purpose (checked by
    `failure_policy`); any other parked event is a violation."""
    accepted = list(accepted)
    found: dict[str, list[Any]] = {}
    with db.connect() as tx:
        stored = {r.order_id: r for r in tx.execute(sa.select(orders))}
        # What the orders' CreateOrderSagas reserved (a CancelOrderSaga only releases it).
        goods_held = {r.saga_id: r for r in tx.execute(sa.select(reservations)
                                                       .where(reservations.c.saga_type == CREATE))}
        credit_held = {r.saga_id: r for r in tx.execute(sa.select(credit_reservations)
                                                        .where(credit_reservations.c.saga_type == CREATE))}
        history: dict[tuple[str, str], list[Any]] = defaultdict(list)  # (saga type, saga id) -> entries
        for entry in tx.execute(sa.select(saga_history).order_by(saga_history.c.id)):
            history[entry.saga_type, entry.saga_id].append(entry)
        sagas = {(r.saga_type, r.saga_id): r for r in tx.execute(sa.select(saga_instances))}

    found["every accepted order is stored and ended"] = [
        (o.order_id, stored[o.order_id].state if o.order_id in stored else "missing")
        for o in accepted if o.order_id not in stored or stored[o.order_id].state not in ENDED
    ]
    found["accepted orders are stored as sent"] = [
        o.order_id for o in accepted if o.order_id in stored and (
            stored[o.order_id].customer_id, stored[o.order_id].goods_id, stored[o.order_id].goods_total,
            stored[o.order_id].order_total) != (o.customer_id, o.goods_id, o.quantity, o.total)
    ]
    found["no order without its saga"] = [order_id for order_id in stored if (CREATE, order_id) not in sagas]
    # Stock + reserved = initial per item, credit limit = available + reserved per account, no saga
    # unfinished, no order pending, the outbox empty (localstack/invariants.py).
    books = unbalanced_books(db, initial_stock)
    if "events parked" in books:
        unexpected = [row for row in books["events parked"]
                      if cast(tuple[str, int], row)[0] not in (expected_parked_events or set())]
        books = {name: rows for name, rows in books.items() if name != "events parked"} | (
            {"events parked": unexpected} if unexpected else {})
    found["books balance"] = [f"{name}: {rows[:SAMPLES]}" for name, rows in books.items()]

    no_step_twice: list[Any] = []
    unfinished: list[Any] = []
    uncompensated: list[Any] = []
    outcome_mismatch: list[Any] = []
    holdings: list[Any] = []
    other_version: list[Any] = []
    cancels: list[Any] = []
    for (saga_type, saga_id), entries in history.items():
        # A command sent again (a resend, a retry, a resume: `resent`, `attempt`, `resumed` in its entry) is the
        # same step under the retry budget, not the step done twice; the participant's inbox dedups a resend.
        counts = Counter((e.step, e.event) for e in entries
                         if e.event in DONE_ONCE and not {"resent", "attempt", "resumed"} & e.detail.keys())
        twice = sorted({f"{event}@{step}" for (step, event), n in counts.items() if n > 1})
        if twice:
            no_step_twice.append((saga_type, saga_id, twice))
        finished = [e for e in entries if e.event == "FINISHED"]
        if len(finished) != 1:
            unfinished.append((saga_type, saga_id))
        started = [e.detail.get("definitionVersion") for e in entries if e.event == "STARTED"]
        versions = {*started, *(e.detail.get("definitionVersion") for e in finished)}
        instance = sagas.get((saga_type, saga_id))
        if instance is not None and versions - {None, instance.definition_version}:
            other_version.append((saga_type, saga_id, sorted(v for v in versions if v is not None),
                                  instance.definition_version))
    for order_id, order in stored.items():
        entries = history.get((CREATE, order_id), [])
        counts = Counter((e.step, e.event) for e in entries if e.event == "COMPENSATION_DONE")
        finished = [e for e in entries if e.event == "FINISHED"]
        cancel = [e for e in history.get((CANCEL, order_id), []) if e.event == "FINISHED"]
        if (order.state == "CANCELLED") != bool(cancel) or any(e.detail.get("outcome") != "COMPLETED" for e in cancel):
            cancels.append((order_id, order.state, [e.detail.get("outcome") for e in cancel]))
        if len(finished) != 1:
            continue
        expected = "COMPENSATED" if order.state == "REJECTED" else "COMPLETED"  # APPROVED, later CANCELLED
        if finished[0].detail.get("outcome") != expected:
            outcome_mismatch.append((order_id, order.state, finished[0].detail.get("outcome")))
        if order.state == "REJECTED":
            missing = [COMPENSATED_STEPS[step] for step in _steps_to_undo(entries)
                       if (step, "COMPENSATION_DONE") not in counts]
            if missing:
                uncompensated.append((order_id, missing))
        goods = goods_held.get(order_id)
        credit = credit_held.get(order_id)
        holds = (goods is not None and goods.state == "RESERVED", credit is not None and credit.state == "RESERVED")
        wanted = (True, True) if order.state == "APPROVED" else (False, False)
        if holds != wanted:
            holdings.append((order_id, order.state, {"goods": holds[0], "credit": holds[1]}))
        elif order.state == "APPROVED" and (goods.quantity != order.goods_total  # type: ignore[union-attr]
                                            or credit.amount != order.order_total):  # type: ignore[union-attr]
            holdings.append((order_id, "held amounts differ from the order"))
    found["no saga step done twice"] = no_step_twice
    found["every saga finished exactly once"] = unfinished
    found["saga outcome matches the order state"] = outcome_mismatch
    found["every completed step of a rejected saga compensated"] = uncompensated
    found["participants hold exactly what approved orders took"] = holdings
    found["every cancelled order's cancel completed, and only theirs"] = cancels
    found["every saga finished on the version it started with"] = other_version

    ended = {order_id for order_id, order in stored.items() if order.state in ENDED}
    found["no unexplained dead letter"] = [d for d in dead_letters if d.get("sagaid") not in ended]
    return _sampled(found)


def _sampled(found: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {name: rows[:SAMPLES] + ([f"... {len(rows) - SAMPLES} more"] if len(rows) > SAMPLES else [])
            for name, rows in found.items()}


def failure_policy(db: sa.Engine, *, budget: int, unparked: list[Any], resumed: list[tuple[str, str]],
                   poisoned: list[tuple[str, str, datetime]], poisoned_events: list[tuple[str, datetime]],
                   late_bound: float, parked_bound: float) -> dict[str, list[Any]]:
    """The items that need a person. `unparked`: the sagas neither finished nor PARKED once the run was
    quiet; `resumed`: (type, id) of those a person resumed after; `poisoned`: (type, id, parked at);
    `poisoned_events`: (outbox event, committed at)."""
    found: dict[str, list[Any]] = {}
    key = sa.tuple_(saga_history.c.saga_type, saga_history.c.saga_id)
    with db.connect() as tx:
        over_budget = tx.execute(
            sa.select(saga_history.c.saga_id, saga_history.c.event, saga_history.c.detail["attempt"].astext)
            .where(saga_history.c.detail.has_key("attempt"),
                   saga_history.c.detail["attempt"].astext.cast(sa.Integer) > budget)).all()
        parked = {(r.saga_type, r.saga_id) for r in tx.execute(
            sa.select(saga_history.c.saga_type, saga_history.c.saga_id).where(saga_history.c.event == "PARKED"))}
        finished = {(r.saga_type, r.saga_id) for r in tx.execute(
            sa.select(saga_instances.c.saga_type, saga_instances.c.saga_id).where(saga_instances.c.finished))}
        late: list[Any] = []
        for saga_type, saga_id, parked_at in poisoned:
            # From the sweep's first failure on it to a sweep after it was parked: every other expiry came
            # on time (a sweep that stalled on it would show as late expiries in or just after the window).
            first_failure = tx.execute(sa.select(sa.func.min(saga_history.c.at)).where(
                key == sa.tuple_(sa.literal(saga_type), sa.literal(saga_id)),
                saga_history.c.event == "SWEEP_FAILED")).scalar_one()
            if first_failure is None:
                late.append((saga_type, saga_id, "never failed the sweep"))
                continue
            late += [(r.saga_id, r.event, float(r.late)) for r in tx.execute(
                sa.select(saga_history.c.saga_id, saga_history.c.event,
                          saga_history.c.detail["overdueBy"].astext.label("late"))
                .where(saga_history.c.detail.has_key("overdueBy"),
                       key != sa.tuple_(sa.literal(saga_type), sa.literal(saga_id)),
                       saga_history.c.at.between(first_failure, parked_at + timedelta(seconds=late_bound)),
                       saga_history.c.detail["overdueBy"].astext.cast(sa.Float) > late_bound))]
        events = {r.event_id: r for r in tx.execute(
            sa.select(outbox_parked.c.event_id, outbox_parked.c.status, outbox_parked.c.parked_at)
            .where(outbox_parked.c.event_id.in_([event_id for event_id, _ in poisoned_events])))}
    found["no saga retried past its budget without being PARKED"] = [*unparked, *over_budget]
    found["every PARKED saga finishes once resumed"] = sorted((parked | set(resumed)) - finished)
    found["a poisoned saga holds back no other beyond a sweep period"] = late
    refused = []
    for event_id, committed_at in poisoned_events:
        row = events.get(event_id)
        if row is None or row.status != 413 or (row.parked_at - committed_at).total_seconds() > parked_bound:
            refused.append((event_id, None if row is None else (row.status, str(row.parked_at - committed_at))))
    found["an event the broker refuses for good is parked, holding back nothing"] = refused
    return _sampled(found)


def sagas_by_version(db: sa.Engine) -> dict[str, dict[int, int]]:
    """How many sagas of each type ran on each definition version."""
    found: dict[str, dict[int, int]] = defaultdict(dict)
    with db.connect() as tx:
        for row in tx.execute(sa.select(saga_instances.c.saga_type, saga_instances.c.definition_version,
                                        sa.func.count()).group_by(saga_instances.c.saga_type,
                                                                  saga_instances.c.definition_version)):
            found[row[0]][row[1]] = row[2]
    return dict(found)


def parked_sagas(db: sa.Engine) -> dict[str, int]:
    """How many sagas were PARKED during the run, by cause."""
    with db.connect() as tx:
        reasons = tx.execute(sa.select(saga_history.c.detail["reason"].astext)
                             .where(saga_history.c.event == "PARKED")).scalars()
        causes = Counter("the sweep failed" if r.startswith("the sweep failed") else
                         "unanswered" if " unanswered " in r else "refused" for r in reasons)
    return dict(causes)


def _steps_to_undo(entries: list[Any]) -> list[int]:
    """Steps that did something before the saga turned back: local steps done, participant steps
    answered with success or timed out (the participant may have acted). The step whose failure
    turned the saga back did nothing, so it has nothing to undo."""
    steps: list[int] = []
    for entry in entries:
        if entry.event == "COMPENSATING":
            break
        if entry.event == "LOCAL_DONE" or entry.event == "TIMED_OUT" or (
                entry.event == "REPLY_RECEIVED" and entry.detail.get("outcome") == "SUCCESS"):
            steps.append(entry.step)
    return [step for step in dict.fromkeys(steps) if step in COMPENSATED_STEPS]


def dead_letters(bootstrap: str, topics: Iterable[str]) -> list[dict[str, str]]:
    """Every record in the dead-letter topics, as its CloudEvent attributes (ce_* headers)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-checker", "enable.auto.commit": False,
                         "isolation.level": "read_uncommitted", "log_level": 2})
    found: list[dict[str, str]] = []
    try:
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=20).topics[topic]
            for number in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, number), timeout=20)
                if high <= low:
                    continue
                partition = TopicPartition(topic, number, low)
                consumer.assign([partition])
                deadline = time.monotonic() + 60
                # Up to the end: the position passes transaction markers, which poll never returns.
                while consumer.position([partition])[0].offset < high:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{topic}[{number}] not read to offset {high} within 60 s")
                    message = consumer.poll(0.5)
                    if message is None or message.error():
                        continue
                    pairs = cast(list[tuple[str, bytes | None]], message.headers() or [])
                    headers = {k: (v or b"").decode(errors="replace") for k, v in pairs}
                    found.append({k.removeprefix("ce_"): v for k, v in headers.items() if k.startswith("ce_")})
    finally:
        consumer.close()
    return found

"""`make chaos`: orders at a steady rate through the whole local stack while faults are injected at
random moments; then, with the faults stopped and the stack quiet, every invariant is checked over
everything that happened. Prints one JSON line and exits non-zero on any violation.

Bounded: at most `--orders` orders and `--faults-per-kind` faults of each kind, within `--max-minutes`;
localhost only, on a PostgreSQL and a Kafka of its own (fresh each run). See docs/guarantees.md.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from chaos import checks
from chaos.faults import PHASE_ONE, Injector, faults_wanted
from chaos.infra import ChaosInfra
from chaos.load import Load
from functions.account.schema import accounts
from functions.goods.schema import goods
from localstack.infra import git_revision, repo_root
from localstack.invariants import DEMO_STOCK
from localstack.process import wait_until
from localstack.stack import Stack

log = logging.getLogger("chaos")

PORT_OFFSET = 3000  # apart from dev (0), bench (5000) and tests (10000); below the ephemeral ports
ADMIN = ("admin", "admin-password-dev")  # the local stack's admin (CONTRACT.md): orders for any customer
DEMO_USER = ("lisa", "lisa-password-dev")
# A catalogue of its own: one item scarce enough to sell out (INSUFFICIENT_GOODS), customers whose
# credit runs out during a long run (INSUFFICIENT_CREDIT, a compensated saga).
GOODS = {3000 + n: (Decimal(f"{5 + 3 * n}.00"), 10**6) for n in range(9)} | {3009: (Decimal("7.00"), 60)}
CUSTOMERS = [f"chaos-{n:02d}" for n in range(40)]
CREDIT = Decimal("1500.00")
# After the faults and the quiet, rounds of a few correct orders for a customer the load never used,
# until a whole round is approved: the stack has recovered. Every saga ending is not enough on its own
# (a Trigger stuck for good lets every saga end, by timing out). The bound leaves room for the
# dispatcher's watchdog (a hung Kafka call ends it after 60 s) and a restart.
RECOVERY_CUSTOMER, RECOVERY_GOODS, RECOVERY_ORDERS = "chaos-recovery", 3000, 5
RECOVERY_SECONDS = 240.0
QUIET_SECONDS = 900.0  # a long run can end with thousands of sagas queued behind the last broker restart
# The retry budget of the run's compensations: 4 tries, 1 s, 2 s, 4 s apart (a stocktake longer than
# that parks sagas), and a poisoned saga parked after 3 failed sweeps.
RETRY_ATTEMPTS, RETRY_FIRST_DELAY = 4, 1.0
SWEEP_SECONDS = 1.0  # the PingSources' period on this run's stack (ping_every)
CANCEL_SHARE = 0.1  # orders cancelled at once by their client, racing their approval


@click.command()
@click.option("--orders", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Orders to have accepted (at least); the run goes on until the faults are done too.")
@click.option("--faults-per-kind", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0.5, max=50), default=2.0, show_default=True,
              help="Orders placed per second.")
@click.option("--step-timeout", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds a saga waits for a participant before it times out (the stack's step deadline).")
@click.option("--max-minutes", type=click.FloatRange(min=1), default=90.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed (printed; the same seed picks the same faults).")
@click.option("--short", is_flag=True, help="The CI run: 120 orders, 2 faults of each kind.")
@click.option("--port-shift", type=click.IntRange(min=0, max=900), default=0, show_default=True,
              help="Move every port of the run by this much (two runs side by side).")
@click.option("--out", type=click.Path(path_type=Path),
              help="Where the JSON goes too [chaos/results/<date>-<rev>.json; none for --short].")
def main(orders: int, faults_per_kind: int, rate: float, step_timeout: float, max_minutes: float,
         seed: int | None, short: bool, port_shift: int, out: Path | None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    # SIGTERM unwinds like Ctrl-C: every server and function this run started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for noisy in ("httpx", "localstack.gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if short:  # bounded well inside the CI test's own timeout, quiet wait included
        orders, faults_per_kind, max_minutes = 120, 2, min(max_minutes, 8.0)
    seed = seed if seed is not None else random.randrange(2**32)
    revision, began = git_revision(), datetime.now(UTC)
    report = {
        "revision": revision, "date": began.isoformat(timespec="seconds"),
        "asked": {"orders": orders, "faults_per_kind": faults_per_kind, "rate": rate, "step_timeout": step_timeout},
        **run(orders=orders, faults_per_kind=faults_per_kind, rate=rate, step_timeout=step_timeout,
              deadline=time.monotonic() + max_minutes * 60, seed=seed, port_shift=port_shift),
    }
    if out is None and not short:
        out = repo_root() / "chaos" / "results" / f"{began:%Y-%m-%d}-{revision}.json"
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    click.echo(json.dumps(report, default=str))
    if report["violations"] or not report["completed"]:
        sys.exit(1)


def run(*, orders: int, faults_per_kind: int, rate: float, step_timeout: float, deadline: float,
        seed: int, port_shift: int = 0) -> dict[str, Any]:
    repo = repo_root()
    root = repo / ".local" / ("chaos" if not port_shift else f"chaos-{port_shift}")
    started = time.monotonic()
    infra = ChaosInfra(repo, root, port_shift=port_shift)
    with infra as servers:
        env = {"SAGA_STEP_TIMEOUT_SECONDS": str(step_timeout), "SAGA_RETRY_ATTEMPTS": str(RETRY_ATTEMPTS),
               "SAGA_RETRY_FIRST_DELAY_SECONDS": str(RETRY_FIRST_DELAY), **PHASE_ONE}
        with Stack(repo, root / "stack", servers, port_offset=PORT_OFFSET + port_shift, keep_warm=True,
                   ping_every=SWEEP_SECONDS,
                   kafka_suffix=f"-chaos-{uuid.uuid4().hex[:6]}", env=env) as stack:
            db = sa.create_engine(servers.database_url, pool_pre_ping=True)
            _seed(db)
            load = Load(stack.url("order-api"), stack.url("auth-api"), ADMIN, DEMO_USER, CUSTOMERS,
                        {item: price for item, (price, _) in GOODS.items()}, rate=rate, seed=seed,
                        cancel_share=CANCEL_SHARE)
            injector = Injector(stack, infra, db, load.resume, freeze_seconds=step_timeout + 3.0, seed=seed)
            stop_load = threading.Event()
            # Orders flow the whole time faults are injected, and on until enough were accepted.
            loader = threading.Thread(target=load.run, args=(stop_load, orders * 10), name="load", daemon=True)
            loader.start()
            completed = _inject(injector, faults_per_kind, random.Random(seed), deadline)
            while len(load.outcome.accepted) < orders and time.monotonic() < deadline and loader.is_alive():
                time.sleep(0.2)
            completed = completed and len(load.outcome.accepted) >= orders
            stop_load.set()
            loader.join(timeout=200)
            faults_done = time.monotonic()
            # Quiet: every saga finished or PARKED (waiting for a person); then a person resumes them.
            quiet = _quiet(db, QUIET_SECONDS if faults_per_kind > 2 else 240.0)
            unparked = _unfinished(db, parked_too=False)
            resumed = _resume_parked(db, load)
            quiet += _quiet(db, 240.0)
            not_recovered, recovered_after = _recover(db, load)
            load.close()
            dead = checks.dead_letters(servers.kafka_bootstrap, stack.topology.dead_letter_topics)
            record = injector.record
            found = checks.invariants(db, load.outcome.accepted, _initial_stock(), dead,
                                      expected_parked_events={event_id for event_id, _ in record.poisoned_events})
            found.update(checks.failure_policy(
                db, budget=RETRY_ATTEMPTS, unparked=unparked, resumed=resumed, poisoned=record.poisoned_sagas,
                poisoned_events=record.poisoned_events,
                # A sweep that meets a poisoned saga fails it in one transaction and goes on: the others are
                # late by a sweep period and the time the sweep takes (bounded generously on a loaded box). A
                # refused event is parked by the relay's first sweep of it (after its 5 s grace), unless a
                # broker restart just before left a backlog: 30 s.
                late_bound=SWEEP_SECONDS + 5.0, parked_bound=30.0))
            parked = checks.parked_sagas(db)
            versions = checks.sagas_by_version(db)
            found["the stack recovers: orders after the faults are approved"] = not_recovered
            outcomes = _outcomes(db)
            db.dispose()
    outcome = load.outcome
    return {
        "completed": completed,
        "seed": seed,
        "orders_accepted": len(outcome.accepted),
        "orders_given_up": outcome.given_up,
        "outcomes": outcomes,
        "faults": dict(record.by_kind),
        "faults_not_injected": dict(record.failed),
        "functions_killed": dict(record.killed),
        "killed_mid_request": record.killed_mid_request,
        "participants_frozen": dict(record.frozen),
        "records_redelivered": record.redelivered,
        "stocktakes_seconds": record.stocktake_seconds,
        "sagas_poisoned": len(record.poisoned_sagas),
        "events_poisoned": len(record.poisoned_events),
        "sagas_parked": parked,
        "parked_resumed_at_end": len(resumed),
        "upgraded_after_faults": record.upgraded_after_faults,
        "sagas_by_version": versions,
        "client_answers": outcome.statuses,
        "client_retries": outcome.retried,
        "logins": {"ok": outcome.logins, "failed": outcome.logins_failed},
        "cancels": outcome.cancels,
        "dead_letters": len(dead),
        "quiet_after_seconds": quiet,
        "recovered_after_seconds": recovered_after,
        "invariants": {name: not rows for name, rows in found.items()},
        "violations": {name: rows for name, rows in found.items() if rows},
        "seconds": round(time.monotonic() - started),
        "fault_seconds": round(faults_done - started),
    }


MAX_INJECTION_FAILURES = 10  # faults that could not be injected (say, the target vanished) before giving up


def _inject(injector: Injector, per_kind: int, chooser: random.Random, deadline: float) -> bool:
    """Faults at random moments, kinds in random order, until each kind reached `per_kind` (its share of
    it for the slow ones). A fault that could not be injected is logged, counted, and tried again later."""
    left = Counter(faults_wanted(per_kind))
    halfway = sum(left.values()) // 2
    while +left:
        if injector.record.upgraded_after_faults is None and sum(injector.record.by_kind.values()) >= halfway:
            injector.upgrade()  # a definition upgrade mid-run, with the faults going on around it
        if time.monotonic() > deadline:
            log.warning("time limit reached with faults left: %s", dict(+left))
            return False
        time.sleep(chooser.uniform(0.2, 2.0))
        kind = chooser.choice(sorted(+left))
        try:
            injector.inject(kind)
        except Exception:
            log.exception("injecting %s failed", kind)
            injector.record.failed[kind] += 1
            if sum(injector.record.failed.values()) > MAX_INJECTION_FAILURES:
                return False
            continue
        left[kind] -= 1
    return True


def _seed(db: sa.Engine) -> None:
    with db.begin() as tx:
        tx.execute(insert(goods).values([
            {"id": item, "name": f"chaos item {item}", "unit_price": price, "stock": stock}
            for item, (price, stock) in GOODS.items()
        ]))
        tx.execute(insert(accounts).values([
            {"customer_id": customer, "credit_limit": CREDIT, "available_credit": CREDIT}
            for customer in [*CUSTOMERS, RECOVERY_CUSTOMER]
        ]))


def _initial_stock() -> dict[int, int]:
    return {**DEMO_STOCK, **{item: stock for item, (_, stock) in GOODS.items()}}


def _unfinished(db: sa.Engine, *, parked_too: bool) -> list[tuple[str, str]]:
    """Sagas (type, id) not finished (and not PARKED unless `parked_too`)."""
    parked = "" if parked_too else " AND parked_reason IS NULL"
    with db.connect() as tx:
        found = tx.execute(sa.text(f"SELECT saga_type, saga_id FROM orders.saga_instances WHERE NOT finished{parked}"))
        return [(row.saga_type, row.saga_id) for row in found]


def _resume_parked(db: sa.Engine, load: Load) -> list[tuple[str, str]]:
    """What a person does once the causes are gone (the stocktakes ended, the poisoned sagas repaired):
    resume every PARKED saga through the admin API. The sagas (type, id) resumed."""
    with db.connect() as tx:
        parked = [(row.saga_type, row.saga_id) for row in tx.execute(sa.text(
            "SELECT saga_type, saga_id FROM orders.saga_instances WHERE parked_reason IS NOT NULL ORDER BY 2, 1"))]
    for saga_type, saga_id in parked:
        status = load.resume(saga_type, saga_id)
        if status not in (200, 409):
            log.warning("resuming %s %s answered %s", saga_type, saga_id, status)
    if parked:
        log.info("resumed %d parked saga(s)", len(parked))
    return parked


def _quiet(db: sa.Engine, limit: float) -> float:
    """Wait (at most `limit` seconds) until every saga is finished or PARKED and the outbox is empty; the
    seconds it took."""
    started = time.monotonic()

    def settled() -> bool:
        try:
            with db.connect() as tx:
                queued = tx.execute(sa.text("SELECT count(*) FROM orders.outbox"))
                return not _unfinished(db, parked_too=False) and queued.scalar_one() == 0
        except sa.exc.OperationalError:
            return False

    try:
        wait_until(settled, timeout=limit, what="every saga to finish", interval=0.5)
    except TimeoutError:
        log.warning("not quiet after %.0f s; checking anyway", limit)
    return round(time.monotonic() - started, 1)


def _recover(db: sa.Engine, load: Load) -> tuple[list[Any], float | None]:
    """Rounds of correct orders until one is approved in full, within RECOVERY_SECONDS: what the last
    round left unapproved (nothing once recovered), and the seconds it took (None if it never did)."""
    started = time.monotonic()
    while True:
        placed = load.place_correct(RECOVERY_CUSTOMER, RECOVERY_GOODS, RECOVERY_ORDERS)
        left = RECOVERY_SECONDS - (time.monotonic() - started)
        _quiet(db, max(left, 1.0))
        failed = checks.not_approved(db, placed, RECOVERY_ORDERS)
        if not failed:
            return [], round(time.monotonic() - started, 1)
        if time.monotonic() - started > RECOVERY_SECONDS:
            return failed, None
        log.warning("not recovered yet: %s", failed)


def _outcomes(db: sa.Engine) -> dict[str, int]:
    with db.connect() as tx:
        rows = tx.execute(sa.text("SELECT state, coalesce(rejection_reason, '') AS reason, count(*) AS n "
                                  "FROM orders.orders GROUP BY 1, 2 ORDER BY 1, 2"))
        return {f"{r.state} {r.reason}".strip(): r.n for r in rows}


if __name__ == "__main__":
    main()

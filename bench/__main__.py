"""`make bench`: the local stack under load on this machine, measured; see docs/performance.md.

It hosts the whole stack (functions kept warm), seeds a catalogue of its own, then runs closed-loop
phases (throughput at concurrency 1, 4, 16, 64), open-loop phases (latency at 10/s, 20/s, 50/s and half
the best throughput), reads the footprint of the idle processes, scales every function to zero 20
times to time its cold start, and checks the books. It prints a table and one JSON line, writes
the JSON to bench/results/<date>-<rev>.json, and exits non-zero if any invariant is broken.
Progress goes to stderr: a bar per phase on a terminal, a plain line every 10 s and at each phase's
end elsewhere (saga/progress.py); stdout holds only the table and the JSON line.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import httpx
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from bench import coldstart, measure, profile
from bench.load import Catalogue, Phase, percentiles
from functions.account.schema import accounts
from functions.goods.schema import goods
from functions.order.schema import orders, outbox
from localstack.databases import throwaway_database
from localstack.infra import Infra, dev_infra, git_revision, repo_root
from localstack.invariants import DEMO_STOCK, unbalanced_books
from localstack.otlp import Receiver
from localstack.process import wait_until
from localstack.stack import Stack
from saga.progress import Progress

log = logging.getLogger("bench")

PORT_OFFSET = 5000  # apart from `make dev` (0) and the end-to-end tests (10000), below the ephemeral ports (32768+)
ADMIN = ("admin", "admin-password-dev")  # the local stack's admin (CONTRACT.md): may order for any customer
BENCH_GOODS = range(1000, 1050)  # plenty of stock, so stock never runs out by accident
SOLD_OUT = 1050
STOCK = 100_000_000
CUSTOMERS = [f"bench-{n:03d}" for n in range(100)]
BROKE = [f"bench-broke-{n:02d}" for n in range(10)]
QUIET_TIMEOUT = 120.0
WARMUP_SECONDS = 45.0
OWN_QUERY = "/* bench */"  # marks the benchmark's own queries, left out of the per-saga counts


class Bench:
    def __init__(self, stack: Stack, database_url: str) -> None:
        self.stack = stack
        self.database_url = database_url
        self.db = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
        server = sa.make_url(database_url)
        # pg_stat_statements needs a superuser to install; the local server trusts 127.0.0.1.
        self.admin = sa.create_engine(server.set(username="postgres", password=None, database="postgres"),
                                      isolation_level="AUTOCOMMIT")
        self.database_name = server.database or ""
        self.catalogue = Catalogue(list(BENCH_GOODS), SOLD_OUT, CUSTOMERS, BROKE)
        self.kafka = stack.infra.kafka_bootstrap
        self.topics = [stack.topology.topic, *stack.topology.dead_letter_topics]
        self.initial_offsets = measure.end_offsets(self.kafka, self.topics)
        self.accepted = 0
        self.progress = Progress("bench")

    # --- set-up ---
    def seed(self) -> None:
        with self.db.connect() as conn:
            conn.execute(insert(goods).values(
                [{"id": i, "name": f"bench item {i}", "unit_price": Decimal("1.00"), "stock": STOCK}
                 for i in BENCH_GOODS]
                + [{"id": SOLD_OUT, "name": "bench sold out", "unit_price": Decimal("1.00"), "stock": 0}]
            ))
            conn.execute(insert(accounts).values(
                [{"customer_id": c, "credit_limit": Decimal(10**9), "available_credit": Decimal(10**9)}
                 for c in CUSTOMERS]
                + [{"customer_id": c, "credit_limit": Decimal("0.01"), "available_credit": Decimal("0.01")}
                   for c in BROKE]
            ))

    def token(self) -> str:
        answer = httpx.post(f"{self.stack.url('auth-api')}/auth/login", timeout=30,
                            json={"username": ADMIN[0], "password": ADMIN[1]})
        answer.raise_for_status()
        return str(answer.json()["access_token"])

    @property
    def initial_stock(self) -> dict[int, int]:
        return {**DEMO_STOCK, **dict.fromkeys(BENCH_GOODS, STOCK), SOLD_OUT: 0}

    # --- what runs where ---
    def processes(self) -> dict[str, int]:
        assert self.stack.gateway is not None
        found = {name: f.process.pid for name, f in self.stack.gateway.functions.items() if f.process is not None}
        found["gateway (activator + ingress)"] = os.getpid()
        if self.stack.dispatcher_pid is not None:
            found["dispatcher"] = self.stack.dispatcher_pid
        for name, port in (("postgresql", sa.make_url(self.database_url).port),
                           ("kafka", int(self.kafka.rsplit(":", 1)[1]))):
            pid = measure.listening_pid(port or 5432)
            if pid is not None:
                found[name] = pid
        return found

    def profiled(self) -> dict[str, int]:
        """The Python processes on a saga's path: each busy function's process, the dispatcher, the
        gateway (this process)."""
        assert self.stack.gateway is not None
        found = {"gateway": os.getpid()}
        for name in ("order-api", "order-saga", "goods-reserve", "account-reserve-credit"):
            process = self.stack.gateway.functions[name].process
            if process is not None:
                found[name] = process.pid
        if self.stack.dispatcher_pid is not None:
            found["dispatcher"] = self.stack.dispatcher_pid
        return found

    def quiet(self) -> None:
        """Every accepted order ended and the outbox drained: the work a phase caused is done."""
        def done() -> bool:
            with self.db.connect() as conn:
                pending = conn.execute(sa.text(f"{OWN_QUERY} SELECT count(*) FROM orders.orders "
                                               "WHERE state = 'PENDING'")).scalar_one()
                queued = conn.execute(sa.text(f"{OWN_QUERY} SELECT count(*) FROM orders.outbox")).scalar_one()
            return pending == 0 and queued == 0

        wait_until(done, timeout=QUIET_TIMEOUT, what="every order to end", interval=0.1)

    # --- load ---
    def phase(self, name: str, mode: str, seconds: float, *, concurrency: int = 0, rate: float = 0.0,
              warmup: float | None = None, profile_to: Path | None = None) -> dict[str, Any]:
        self.quiet()
        phase = Phase(
            name=name, mode=mode, seconds=seconds, warmup=seconds / 4 if warmup is None else warmup,
            order_url=f"{self.stack.url('order-api')}/orders", token=self.token(), database_url=self.database_url,
            catalogue=self.catalogue, concurrency=concurrency, rate=rate, seed=len(name) * 7919 + concurrency,
        )
        meter = measure.CpuMeter(self.processes(), own_only=frozenset({"gateway (activator + ingress)"}))
        wire = measure.WireMeter(sa.make_url(self.database_url).port or 5432, int(self.kafka.rsplit(":", 1)[1]))
        offsets = measure.end_offsets(self.kafka, self.topics)
        before = measure.statements(self.admin, self.database_name)
        meter.start()
        wire.start()
        spies = profile.start(self.profiled(), seconds, profile_to) if profile_to else []
        # The load generator shows its own progress on this process's stderr (its CPU is not the stack's).
        done = subprocess.run([sys.executable, "-m", "bench.load"], input=phase.to_json(), cwd=repo_root(),
                              check=True, stdout=subprocess.PIPE, text=True, timeout=seconds + 120)
        summary: dict[str, Any] = json.loads(done.stdout)
        for spy in spies:
            spy.wait(timeout=60)
        if profile_to:
            summary["profile"] = profile.summary(profile_to)
        self.quiet()
        cpu = meter.stop()
        wired = wire.stop()
        after = measure.statements(self.admin, self.database_name)
        records = measure.records_between(self.kafka, offsets, measure.end_offsets(self.kafka, self.topics))
        self.accepted += summary["accepted"]
        sagas = summary["accepted"] or 1
        cpu["load generator (not the system)"] = summary["cpu_seconds"]
        summary["cost_per_saga"] = {
            "cpu_ms": {k: round(v * 1000 / sagas, 2) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])},
            "cpu_ms_system": round(sum(v for k, v in cpu.items() if "load generator" not in k) * 1000 / sagas, 2),
            "kafka_records": round(records / sagas, 2),
            **{name: None if count is None else round(count / sagas, 2) for name, count in wired.items()},
        }
        if before is not None and after is not None:
            # Left out: the benchmark's own queries (the load generator's end watcher among them).
            ran = [s for s in measure.statements_between(before, after) if OWN_QUERY not in s.query]
            transactions = sum(s.calls for s in ran if s.query.strip().upper() in ("COMMIT", "ROLLBACK"))
            summary["cost_per_saga"].update({
                "db_transactions": round(transactions / sagas, 2),
                "db_statements": round(sum(s.calls for s in ran) / sagas, 2),
            })
            summary["top_statements"] = [
                {"query": " ".join(s.query.split())[:160], "calls_per_saga": round(s.calls / sagas, 2),
                 "ms_per_call": round(s.total_ms / s.calls, 3)}
                for s in sorted(ran, key=lambda s: -s.total_ms)[:8]
            ]
        del summary["order_ids"]
        log.info("%s: %s sagas/s, latency %s", name, summary["throughput"], summary["latency_ms"])
        return summary

    # --- idle processes ---
    def footprint(self) -> dict[str, dict[str, int]]:
        assert self.stack.gateway is not None
        found: dict[str, dict[str, int]] = {}
        for name, function in sorted(self.stack.gateway.functions.items()):
            if function.process is None:
                continue
            master = function.process.pid
            tree = [master, *measure.children(master)]
            memory = [measure.memory_kib(pid) for pid in tree]
            found[name] = {"processes": len(tree), "rss_kib": sum(m["rss"] for m in memory),
                           "pss_kib": sum(m["pss"] for m in memory), "worker_rss_kib": memory[-1]["rss"]}
        if self.stack.dispatcher_pid is not None:
            alone = measure.memory_kib(self.stack.dispatcher_pid)
            found["dispatcher"] = {"processes": 1, "rss_kib": alone["rss"], "pss_kib": alone["pss"],
                                   "worker_rss_kib": alone["rss"]}
        return found

    # --- cold starts ---
    def cold_starts(self, names: list[str], trials: int, import_runs: int) -> dict[str, Any]:
        token = self.token()
        probes = coldstart.probes(token)
        found: dict[str, Any] = {}
        for name in names:
            with self.progress.phase(f"cold start {name}", unit="starts", total=trials) as shown:
                results = coldstart.measure(self.stack, name, probes[name], trials, shown.advance)
            source = self.stack.manifests.services[name].env_value("FUNCTION_SOURCE") or ""
            startup = coldstart.import_times(source, self.database_url, runs=import_runs)
            ready = percentiles([t.ready for t in results])
            startup["process start to ready"] = ready["p50"] if ready else 0.0
            found[name] = {
                "total_ms": percentiles([t.total for t in results]),
                "statuses": dict(Counter(str(t.status) for t in results)),
                "startup_ms": startup,
            }
            log.info("cold start %s: %s", name, found[name]["total_ms"])
        return found

    # --- invariants ---
    def violations(self) -> dict[str, Any]:
        found: dict[str, Any] = {k: [str(r) for r in v[:10]]
                                 for k, v in unbalanced_books(self.db, self.initial_stock).items()}
        with self.db.connect() as conn:
            in_db = conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one()
            queued = conn.execute(sa.select(sa.func.count()).select_from(outbox)).scalar_one()
        if in_db != self.accepted:
            found["orders accepted != orders stored"] = [f"accepted {self.accepted}, stored {in_db}"]
        if queued:
            found["outbox not empty"] = [queued]
        ends = measure.end_offsets(self.kafka, self.topics)
        dead = {t: n for t in self.stack.topology.dead_letter_topics
                if (n := measure.records_between(self.kafka, self.initial_offsets,
                                                 {tp: o for tp, o in ends.items() if tp[0] == t}))}
        if dead:
            found["dead letters"] = [dead]
        return found


@contextmanager
def bench_stack(infra: Infra, env: dict[str, str]) -> Iterator[tuple[Stack, str]]:
    repo = repo_root()
    with throwaway_database(infra.database_url, "saga_bench") as database, Stack(
        repo, repo / ".local" / "bench", replace(infra, database_url=database), port_offset=PORT_OFFSET,
        keep_warm=True, kafka_suffix=f"-bench-{uuid.uuid4().hex[:8]}", env=env,
    ) as stack:
        yield stack, database


@contextmanager
def span_sink(tracing: bool) -> Iterator[tuple[Receiver | None, dict[str, str]]]:
    """With `tracing`, an OTLP receiver that only counts what arrives (a collector would run elsewhere),
    and the functions' environment that exports every span to it."""
    if not tracing:
        yield None, {}
        return
    with Receiver(keep=False) as sink:
        yield sink, {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint}


def table(report: dict[str, Any]) -> str:
    lines = ["phase            sagas/s   p50 ms   p95 ms   p99 ms   max ms   cpu ms/saga  kafka/saga  tx/saga"
             "  pg trips/saga  kafka req/saga"]
    for phase in report["throughput"] + report["latency"]:
        lat = phase["latency_ms"] or {}
        cost = phase["cost_per_saga"]
        lines.append(
            f"{phase['phase']:<16} {phase['throughput']:>7} {lat.get('p50', '-'):>8} {lat.get('p95', '-'):>8} "
            f"{lat.get('p99', '-'):>8} {lat.get('max', '-'):>8} {cost['cpu_ms_system']:>12} "
            f"{cost['kafka_records']:>11} {cost.get('db_transactions', '-'):>8} "
            f"{cost.get('postgres_round_trips', '-')!s:>14} {cost.get('kafka_requests', '-')!s:>15}"
        )
    lines.append("cold start       p50 ms   p95 ms   ready ms   idle RSS MiB")
    for name, cold in report["cold_start"].items():
        rss = report["footprint"].get(name, {}).get("rss_kib", 0) / 1024
        lines.append(f"{name:<24} {cold['total_ms']['p50']:>6} {cold['total_ms']['p95']:>8} "
                     f"{cold['startup_ms']['process start to ready']:>10} {rss:>14.1f}")
    if "dispatcher" in report["footprint"]:
        lines.append(f"dispatcher idle RSS MiB: {report['footprint']['dispatcher']['rss_kib'] / 1024:.1f}")
    lines.append("invariants: " + ("all hold" if not report["violations"] else json.dumps(report["violations"])))
    return "\n".join(lines)


@click.command()
@click.option("--smoke", is_flag=True, help="~1 min: one short phase of each kind, 2 cold starts of 2 functions")
@click.option("--seconds", type=float, default=15.0, show_default=True, help="length of each load phase")
@click.option("--trials", type=int, default=20, show_default=True, help="cold starts per function")
@click.option("--out", type=click.Path(path_type=Path), help="where the JSON goes [bench/results/<date>-<rev>.json]")
@click.option("--profile", is_flag=True, help="sample the Python processes with py-spy at concurrency 16 "
              "(folded stacks in .local/bench/profile)")
@click.option("--tracing", is_flag=True, help="every function exports its spans (OTLP/HTTP) to a receiver that "
              "counts them: the cost of tracing, against a run without")
def main(smoke: bool, seconds: float, trials: int, out: Path | None, profile: bool, tracing: bool) -> None:
    """Measure throughput, latency, cold starts, footprint and cost per saga on the local stack."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("localstack").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request would break up the progress bars
    began = time.monotonic()
    revision = git_revision()
    with (dev_infra(repo_root()) as infra, span_sink(tracing) as (sink, env),
          bench_stack(infra, env) as (stack, database)):
        bench = Bench(stack, database)
        bench.seed()
        # Kafka's JIT compiler works for a minute or more after its start: its CPU is not the saga's.
        bench.phase("warm-up", "closed", 3.0 if smoke else WARMUP_SECONDS, concurrency=4 if smoke else 16)
        if smoke:
            closed = [bench.phase("closed c=4", "closed", 5.0, concurrency=4, warmup=1.0)]
            best = max(closed, key=lambda p: p["throughput"])
            opened = [bench.phase("open 10/s", "open", 5.0, rate=10, warmup=0.0)]
        else:
            spied = repo_root() / ".local" / "bench" / "profile" if profile else None
            closed = [bench.phase(f"closed c={c}", "closed", seconds, concurrency=c,
                                  profile_to=spied if c == 16 else None) for c in (1, 4, 16, 64)]
            best = max(closed, key=lambda p: p["throughput"])
            half = max(1.0, round(best["throughput"] / 2, 1))
            opened = [bench.phase(f"open {r:g}/s", "open", seconds, rate=r, warmup=0.0) for r in (10, 20, 50, half)]
        bench.quiet()
        violations = bench.violations()
        footprint = bench.footprint()
        names = ["order-api", "goods-reserve"] if smoke else sorted(coldstart.probes("").keys())
        cold = bench.cold_starts(names, 2 if smoke else trials, import_runs=1 if smoke else 2)
        failed = {name: c["statuses"] for name, c in cold.items() if any(int(s) >= 500 for s in c["statuses"])}
        if failed:
            violations["cold starts answered with 5xx"] = [failed]
        bench.quiet()
        after_cold = unbalanced_books(bench.db, bench.initial_stock)  # the probes move no stock or credit
        if after_cold:
            violations["books after the cold-start probes"] = [str(after_cold)[:500]]
        bench.db.dispose()
        bench.admin.dispose()
    report = {
        "revision": revision, "date": datetime.now(UTC).isoformat(timespec="seconds"), "smoke": smoke,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "best": {"concurrency": best["concurrency"], "throughput": best["throughput"]},
        "throughput": closed, "latency": opened, "cold_start": cold, "footprint": footprint,
        "violations": violations, "seconds": round(time.monotonic() - began, 1),
        "tracing": None if sink is None else {"exports": sink.exports, "bytes": sink.received_bytes},
    }
    if out is None:
        suffix = "-tracing" if tracing else ""
        out = repo_root() / "bench" / "results" / f"{datetime.now(UTC):%Y-%m-%d}-{revision}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    click.echo(table(report))
    click.echo(json.dumps(report))
    click.echo(f"written to {out}", err=True)
    sys.exit(1 if violations else 0)


if __name__ == "__main__":
    main()

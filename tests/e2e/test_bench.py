"""`make bench --smoke` (CI's short benchmark) on the real local stack: it runs every kind of
measurement and checks the books afterwards. Speed is never asserted here (docs/performance.md has
the numbers); that every order ended, balanced, and was counted is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localstack.infra import Infra, repo_root
from tests.e2e.conftest import GATEWAY

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(GATEWAY), reason="benchmarks the local stack")]


@pytest.fixture(scope="module")
def report(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "smoke.json"
    env = {**os.environ, "DATABASE_URL": infra.database_url, "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap}
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=repo_root(), env=env,
                          capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, f"bench --smoke failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    printed = json.loads(done.stdout.strip().splitlines()[-1])  # the one JSON line, after the table
    assert printed == json.loads(Path(out).read_text())
    return printed


@pytest.mark.timeout(300)
def test_every_order_of_every_phase_ends_and_the_books_balance(report: dict[str, Any]) -> None:
    assert report["violations"] == {}
    for phase in report["throughput"] + report["latency"]:
        assert phase["accepted"] > 0 and phase["refused"] == {} and phase["unfinished"] == 0, phase
        assert sum(phase["ended"].values()) == phase["accepted"]
        assert phase["latency_ms"]["n"] == phase["accepted"]
        outcomes = set(phase["ended"])
        assert "APPROVED" in outcomes, phase["ended"]


@pytest.mark.timeout(300)
def test_cost_per_saga_is_read_from_the_processes_kafka_and_postgresql(report: dict[str, Any]) -> None:
    cost = report["throughput"][0]["cost_per_saga"]
    # A saga is at least its first command, a reply and the next command: three records.
    assert cost["kafka_records"] >= 3
    assert cost["db_transactions"] >= 3
    # Counted on the servers' sockets: a transaction is at least one round trip; records need requests.
    assert cost["postgres_round_trips"] >= cost["db_transactions"]
    assert cost["kafka_requests"] > 0
    for process in ("order-api", "order-saga", "goods-reserve", "dispatcher", "postgresql", "kafka"):
        assert cost["cpu_ms"][process] > 0, process


@pytest.mark.timeout(300)
def test_cold_starts_answer_and_idle_processes_are_measured(report: dict[str, Any]) -> None:
    assert set(report["cold_start"]) == {"order-api", "goods-reserve"}
    for name, cold in report["cold_start"].items():
        assert set(cold["statuses"]) <= {"200", "201"}, (name, cold["statuses"])
        assert cold["total_ms"]["n"] == 2
        assert cold["startup_ms"]["process start to ready"] <= cold["total_ms"]["max"]
    for name in ("order-api", "order-saga", "dispatcher"):
        assert report["footprint"][name]["rss_kib"] > 10_000, name

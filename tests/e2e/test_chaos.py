"""`make chaos ARGS=--short` (CI's short fault-injection run): orders at a steady rate while every
kind of fault is injected twice (the slow ones once), then the checker over everything that happened.
The long run (`make chaos`: 2,000+ orders, 50 faults of each kind) is in the README."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from chaos.faults import faults_wanted
from localstack.infra import repo_root
from tests.e2e.conftest import GATEWAY

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(GATEWAY), reason="injects faults into the local stack")]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    run = subprocess.Popen([sys.executable, "-m", "chaos", "--short"], cwd=repo_root(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        run.terminate()  # SIGTERM: chaos stops what it started (SIGKILL would orphan its servers)
        stdout, stderr = run.communicate(timeout=120)
    lines = stdout.strip().splitlines()
    assert lines, f"chaos printed nothing (exit {run.returncode}):\n{stderr[-4000:]}"
    printed: dict[str, Any] = json.loads(lines[-1])
    assert run.returncode == (1 if printed["violations"] or not printed["completed"] else 0)
    return printed


@pytest.mark.timeout(1300)
def test_every_invariant_holds_after_every_kind_of_fault(report: dict[str, Any]) -> None:
    # The seed reproduces the run's faults: make chaos ARGS="--short --seed N".
    summary = {key: report[key] for key in ("seed", "outcomes", "quiet_after_seconds", "violations")}
    assert report["violations"] == {}, json.dumps(summary, indent=1)
    assert report["completed"] and all(report["invariants"].values())
    assert report["faults"] == faults_wanted(2)
    assert report["orders_accepted"] >= 120


def test_faults_really_hit_the_flow(report: dict[str, Any]) -> None:
    """The faults mattered: requests were refused and retried, functions died mid-request, records
    were delivered again, some sagas timed out at a frozen participant and were compensated, the
    poisoned saga was parked by the sweep (and resumed: every PARKED saga finished) and the poisoned
    event parked by the relay."""
    assert report["client_retries"] > 0
    assert report["killed_mid_request"] >= 1
    assert report["records_redelivered"] > 0
    assert report["outcomes"].get("REJECTED TIMED_OUT", 0) >= 1
    assert report["outcomes"].get("APPROVED", 0) >= 1
    assert report["sagas_parked"].get("the sweep failed", 0) >= report["sagas_poisoned"] >= 1
    assert report["events_poisoned"] >= 1
    assert report["cancels"].get("accepted", 0) >= 1 and report["outcomes"].get("CANCELLED", 0) >= 1
    # The rollout flipped halfway: cancels before it ran on v1, after it on v2, each to its end.
    assert report["upgraded_after_faults"] is not None
    assert set(report["sagas_by_version"]["CancelOrderSaga"]) == {"1", "2"}, report["sagas_by_version"]

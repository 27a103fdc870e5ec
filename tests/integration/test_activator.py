"""The local activator, as Knative's with `target-burst-capacity: "0"`: in the path only to bring a
function up from zero; a running function accepts its Service's connections itself; an idle one is
scaled to zero and a dead one replaced, each time by the next request."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstack.gateway import Function, Gateway
from localstack.process import wait_until

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PORT = 18790  # below the ephemeral range, apart from the test stack's ports


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    echo = Function(
        name="echo", port=PORT, cwd=REPO, log_file=tmp_path / "echo.log", env=dict(os.environ),
        argv=[sys.executable, "-m", "functions.platform.serve", "--source", "tests/integration/echo_function.py",
              "--target", "echo", "--host", "127.0.0.1", "--port", str(PORT)],
    )
    # No broker behind this ingress: the producer only connects when something is sent.
    running = Gateway({"echo": echo}, idle_seconds=1.0, keep_warm=False, kafka_bootstrap="127.0.0.1:9",
                      broker_topic="unused", ingress_port=PORT + 1, ingress_path="/unused")
    running.start([])
    yield running
    running.stop()


def ask() -> dict[str, Any]:
    with httpx.Client(timeout=30) as client:  # a new connection each time
        answer = client.get(f"http://127.0.0.1:{PORT}/")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_the_activator_starts_the_function_then_leaves_the_path(gateway: Gateway) -> None:
    function = gateway.functions["echo"]
    assert function.process is None, "scaled to zero until asked"
    first = ask()
    assert first["proxied"], "the request that woke it went through the activator"
    later = [ask() for _ in range(5)]
    assert all(not answer["proxied"] for answer in later), "then the function takes connections itself"
    assert {answer["pid"] for answer in later} == {first["pid"]}


def test_an_idle_function_is_scaled_to_zero_and_woken_by_the_next_request(gateway: Gateway) -> None:
    first = ask()
    function = gateway.functions["echo"]
    wait_until(lambda: function.process is None, timeout=20, what="scale to zero after 1 s idle", interval=0.1)
    again = ask()
    assert again["pid"] != first["pid"] and again["proxied"], "a new process, started by the activator"


def test_a_killed_function_is_replaced_by_the_next_request(gateway: Gateway) -> None:
    first = ask()
    os.killpg(first["pid"], signal.SIGKILL)
    function = gateway.functions["echo"]
    wait_until(lambda: function.process is None, timeout=10, what="the activator to see the exit", interval=0.05)
    assert ask()["pid"] != first["pid"]


def test_a_busy_function_is_not_scaled_to_zero(gateway: Gateway) -> None:
    first = ask()
    deadline = time.monotonic() + 4  # four idle periods, with a request every 0.3 s
    while time.monotonic() < deadline:
        assert ask()["pid"] == first["pid"]
        time.sleep(0.3)

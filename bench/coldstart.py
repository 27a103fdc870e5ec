"""Cold starts: a function is scaled to zero, then one real request or event reaches it through the
activator, and the time until it answers is measured; plus where a start's time goes.

Each probe is what the function serves in production, chosen so it moves no stock or credit: a read
for the APIs, a command naming goods or a customer that does not exist for the participants (a real
rejection reply, with its inbox row), a reply to an unknown saga for the step handler (422), a
registration for the provisioner, the PingSource event for the outbox relays.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

import httpx
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from functions.account.messages import USER_REGISTERED, ReleaseCredit, ReserveCredit
from functions.goods.messages import GoodsReserved, ReleaseGoods, ReserveGoods
from localstack.infra import repo_root
from localstack.stack import Stack
from saga.messages import command_event, domain_event, reply_event

Probe = Callable[[], tuple[str, str, dict[str, str], bytes]]  # method, path, headers, body


@dataclass(frozen=True)
class Trial:
    total: float  # request sent -> answer received
    ready: float  # process spawned -> its readiness probe answered (inside `total`)
    status: int


def probes(token: str) -> dict[str, Probe]:
    auth = {"Authorization": f"Bearer {token}"}
    missing_goods = 999_999

    def event(make: Callable[[str], CloudEvent]) -> Probe:
        def probe() -> tuple[str, str, dict[str, str], bytes]:
            headers, body = to_binary(make(str(uuid.uuid4())))
            return "POST", "/", dict(headers), body

        return probe

    def command(cmd: ReserveGoods | ReleaseGoods | ReserveCredit | ReleaseCredit) -> Callable[[str], CloudEvent]:
        return lambda saga_id: command_event(cmd, event_id=str(uuid.uuid4()), source="/bench/coldstart",
                                             saga_type="CreateOrderSaga", saga_id=saga_id, step=1)

    def reply_to_unknown_saga(saga_id: str) -> CloudEvent:
        return reply_event(GoodsReserved(unit_price=Decimal(1)), command=command(ReserveGoods(
            goods_id=missing_goods, quantity=1))(saga_id), source="/bench/coldstart")

    def registration(user_id: str) -> CloudEvent:
        data = {"user_id": user_id, "customer_id": f"bench-cold-{user_id[:8]}", "username": f"cold-{user_id[:8]}"}
        return domain_event(USER_REGISTERED, event_id=user_id, source="/bench/coldstart", key=user_id, data=data)

    def ping(_: str) -> CloudEvent:
        return CloudEvent({"type": "dev.knative.sources.ping", "source": "/bench/coldstart",
                           "datacontenttype": "application/json"}, {})

    def get(path: str, headers: dict[str, str] | None = None) -> Probe:
        return lambda: ("GET", path, dict(headers or {}), b"")

    return {
        "order-api": get("/orders?limit=1", auth),
        "goods-api": get("/goods/1", auth),
        "account-api": get("/account/12223", auth),
        "auth-api": get("/.well-known/jwks.json"),
        "order-saga": event(reply_to_unknown_saga),
        "goods-reserve": event(command(ReserveGoods(goods_id=missing_goods, quantity=1))),
        "goods-release": event(command(ReleaseGoods(goods_id=missing_goods))),
        "account-reserve-credit": event(command(ReserveCredit(customer_id="bench-nobody", amount=Decimal(1)))),
        "account-release-credit": event(command(ReleaseCredit(customer_id="bench-nobody"))),
        "account-provision": event(registration),
        "order-outbox-relay": event(ping),
        "order-saga-timeouts": event(ping),
        "auth-outbox-relay": event(ping),
    }


def measure(stack: Stack, name: str, probe: Probe, trials: int,
            progress: Callable[[int], None] = lambda _: None) -> list[Trial]:
    """`trials` cold starts of one function; `progress(1)` after each."""
    assert stack.gateway is not None
    function = stack.gateway.functions[name]
    found: list[Trial] = []
    with httpx.Client(base_url=stack.url(name), timeout=60) as http:
        for _ in range(trials):
            stack.gateway.scale_to_zero(name)
            method, path, headers, body = probe()
            sent = time.perf_counter()
            answer = http.request(method, path, headers=headers, content=body)
            found.append(Trial(time.perf_counter() - sent, function.started_in or 0.0, answer.status_code))
            progress(1)
    return found


_STARTUP = """
import time
began = time.time()
import json, sys
import functions_framework, functions_framework.aio, uvicorn, uvloop, httptools
framework = time.time()
import importlib; importlib.import_module(sys.argv[1])
imported = time.time()
from functions.platform.database import postgres_url
import psycopg
psycopg.connect(postgres_url(sys.argv[2])).close()
connected = time.time()
print(json.dumps({"interpreter": began - float(sys.argv[3]), "framework imports": framework - began,
                  "function imports": imported - framework, "first database connection": connected - imported}))
"""


def import_times(source: str, database_url: str, runs: int = 3) -> dict[str, float]:
    """Where a start's time goes, in milliseconds, best of `runs` fresh interpreters: spawning the
    interpreter until it runs the first line, the runtime's imports (functions-framework's ASGI app:
    Starlette; uvicorn, uvloop, httptools), the function module's, and its first database
    connection (what its first request pays besides)."""
    module = source.removesuffix(".py").replace("/", ".")
    best: dict[str, float] = {}
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", _STARTUP, module, database_url, repr(time.time())],
                              check=True, capture_output=True, text=True, cwd=repo_root())
        measured: dict[str, float] = json.loads(done.stdout)
        best = {k: min(v, best.get(k, v)) for k, v in measured.items()}
    return {k: round(v * 1000, 1) for k, v in best.items()}

"""The load generator of `make bench`, in a process of its own so that its CPU is not counted as the
stack's: `python -m bench.load < phase.json` prints one JSON line with what happened (the phase
comes on stdin, not argv, since it holds a token).

- closed loop: N clients, each places an order, waits for its end, and places the next;
- open loop: orders start at a fixed rate whatever the system does, and latency counts from the
  scheduled start, so a system that falls behind cannot hide its queue (no coordinated omission).

An order's end is seen the moment it commits: the watcher LISTENs on the channel the order saga
notifies when an order ends (`orders_ended`, as `GET /orders/{id}?wait` does), so the system runs no
query for the benchmark and no poll interval adds to the latency.

Progress (sagas ended, and planned for an open loop) goes to stderr, from this process so that its
CPU is the load generator's too.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import resource
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import psycopg

from functions.order.create_order_saga import ORDER_ENDED
from functions.platform.database import postgres_url
from saga.progress import PhaseProgress, Progress

END_TIMEOUT = 60.0  # an order not ended this long after its start is counted as unfinished


@dataclass(frozen=True)
class Catalogue:
    """What the benchmark seeded: ids the order mix draws from."""

    goods: list[int]  # plenty of stock, unit price 1.00
    sold_out: int  # stock 0: stock-rejected
    customers: list[str]  # plenty of credit
    broke: list[str]  # credit 0.01: credit-rejected (after goods were reserved: a compensation)


@dataclass(frozen=True)
class Phase:
    name: str
    mode: str  # "closed" or "open"
    seconds: float
    warmup: float  # ends before this (from the start) are not counted in throughput
    order_url: str
    token: str
    database_url: str
    catalogue: Catalogue
    concurrency: int = 0  # closed loop
    rate: float = 0.0  # open loop, orders per second
    seed: int = 1

    @classmethod
    def from_json(cls, text: str) -> Phase:
        doc = json.loads(text)
        return cls(**{**doc, "catalogue": Catalogue(**doc["catalogue"])})

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @property
    def planned(self) -> int | None:
        """The orders an open loop places; a closed loop places orders until its time is up."""
        return int(self.rate * self.seconds) if self.mode == "open" else None


@dataclass
class Result:
    phase: str
    mode: str
    concurrency: int
    rate: float
    seconds: float
    started: int = 0
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # HTTP status (or error) -> count
    ended: Counter[str] = field(default_factory=Counter)  # APPROVED / REJECTED:<reason>
    unfinished: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, start -> end seen
    ends_in_window: int = 0
    window: float = 0.0
    order_ids: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0  # this process's own (the load generator's)
    notices: int = 0  # order ends the watcher was told of

    def summary(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "mode": self.mode, "concurrency": self.concurrency, "rate": self.rate,
            "seconds": self.seconds, "started": self.started, "accepted": self.accepted,
            "refused": dict(self.refused), "ended": dict(self.ended), "unfinished": self.unfinished,
            "throughput": round(self.ends_in_window / self.window, 1) if self.window else 0.0,
            "latency_ms": percentiles(self.latencies),
            "cpu_seconds": round(self.cpu_seconds, 3), "notices": self.notices, "order_ids": self.order_ids,
        }


def percentiles(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)

    def at(q: float) -> float:  # nearest rank
        return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000, 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1] * 1000, 1),
            "mean": round(sum(ordered) / len(ordered) * 1000, 1), "n": len(ordered)}


class EndWatcher(threading.Thread):
    """LISTENs for order ends and resolves each order's future with (when it was seen, its outcome).
    An end notified before the order was expected (a fast saga) is kept until it is."""

    def __init__(self, database_url: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="end-watcher", daemon=True)
        self.connection = psycopg.connect(postgres_url(database_url), autocommit=True)
        self.connection.execute(f"LISTEN {ORDER_ENDED}")  # before the first order is placed
        self.loop = loop
        self.waiting: dict[str, asyncio.Future[tuple[float, str]]] = {}
        self.ended: dict[str, tuple[float, str]] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.notices = 0

    def expect(self, order_id: str) -> asyncio.Future[tuple[float, str]]:
        future: asyncio.Future[tuple[float, str]] = self.loop.create_future()
        with self.lock:
            if order_id in self.ended:
                future.set_result(self.ended.pop(order_id))
            else:
                self.waiting[order_id] = future
        return future

    def run(self) -> None:
        with self.connection:
            while not self.stop.is_set():
                for notice in self.connection.notifies(timeout=0.5):
                    seen = time.monotonic()
                    ended = json.loads(notice.payload)
                    state = ended["state"]
                    outcome = state if state == "APPROVED" else f"{state}:{ended['rejectionReason']}"
                    self.notices += 1
                    with self.lock:
                        future = self.waiting.pop(ended["orderId"], None)
                        if future is None:
                            self.ended[ended["orderId"]] = (seen, outcome)
                    if future is not None:
                        self.loop.call_soon_threadsafe(_settle, future, (seen, outcome))


def _settle(future: asyncio.Future[tuple[float, str]], value: tuple[float, str]) -> None:
    if not future.done():
        future.set_result(value)


class OrderMix:
    """~80% approved, ~10% credit-rejected (with compensation), ~10% stock-rejected, shuffled."""

    def __init__(self, catalogue: Catalogue, seed: int) -> None:
        self.catalogue = catalogue
        self.random = random.Random(seed)
        self.deck: list[str] = []

    def next(self) -> dict[str, Any]:
        if not self.deck:
            self.deck = ["approved"] * 8 + ["no-credit", "no-stock"]
            self.random.shuffle(self.deck)
        kind = self.deck.pop()
        c = self.catalogue
        goods_id = c.sold_out if kind == "no-stock" else self.random.choice(c.goods)
        customer = self.random.choice(c.broke if kind == "no-credit" else c.customers)
        return {"customerId": customer, "goodsId": goods_id, "goodsTotal": 1, "orderTotal": {"amount": "1.00"}}


async def run(phase: Phase, shown: PhaseProgress) -> Result:
    loop = asyncio.get_running_loop()
    watcher = EndWatcher(phase.database_url, loop)
    watcher.start()
    mix = OrderMix(phase.catalogue, phase.seed)
    result = Result(phase.name, phase.mode, phase.concurrency, phase.rate, phase.seconds)
    headers = {"Authorization": f"Bearer {phase.token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)  # the open loop must never queue in the client
    started = time.monotonic()
    window = (started + phase.warmup, started + phase.seconds)
    cpu_before = _cpu()

    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def one_order(scheduled: float) -> None:
            result.started += 1
            try:
                async with http.post(phase.order_url, data=json.dumps(mix.next()), headers=headers) as answer:
                    body = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.refused[type(exc).__name__] += 1
                return
            if status != 202:
                result.refused[str(status)] += 1
                return
            order_id = json.loads(body)["orderId"]
            result.accepted += 1
            result.order_ids.append(order_id)
            try:
                seen, outcome = await asyncio.wait_for(watcher.expect(order_id), END_TIMEOUT)
            except TimeoutError:
                result.unfinished += 1
                return
            result.ended[outcome] += 1
            result.latencies.append(seen - scheduled)
            shown.advance()
            if window[0] <= seen <= window[1]:
                result.ends_in_window += 1

        if phase.mode == "closed":
            async def client() -> None:
                while time.monotonic() < window[1]:
                    await one_order(time.monotonic())

            await asyncio.gather(*(client() for _ in range(phase.concurrency)))
        else:
            orders = []
            for i in range(phase.planned or 0):
                at = started + i / phase.rate
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                orders.append(asyncio.create_task(one_order(at)))
            await asyncio.gather(*orders)

    result.window = window[1] - window[0]
    watcher.stop.set()
    watcher.join(timeout=5)
    result.notices = watcher.notices
    result.cpu_seconds = _cpu() - cpu_before
    return result


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    phase = Phase.from_json(sys.stdin.read())
    with Progress("bench").phase(phase.name, unit="sagas", total=phase.planned) as shown:
        result = asyncio.run(run(phase, shown))
    print(json.dumps(result.summary()), flush=True)


if __name__ == "__main__":
    main()

"""The two measurements the function runtime was chosen by (docs/performance.md), one part at a time:

    python -m bench.micro runtime     CPU per request of functions-framework's Flask mode (gunicorn
                                      threads) against its ASGI mode (uvicorn worker), async and sync
    python -m bench.micro database    client and server CPU, round trips and time per transaction
                                      shaped like goods-reserve's, by the way it is executed
    python -m bench.micro serving     goods-reserve started on a handed-over socket: time to its first
                                      answer and idle memory, under functions-framework's command
                                      (gunicorn + uvicorn worker) and under functions/platform/serve.py

Each prints one line per variant. `database` and `serving` need the dev PostgreSQL (`saga infra up`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import psycopg
import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy.dialects.postgresql import JSONB, insert

from bench import measure, sockets
from localstack.process import port_open, wait_until

_FUNCTIONS = '''
import functions_framework
from functions_framework import aio
from starlette.responses import Response

@functions_framework.http
def flask_function(request):
    request.get_data()
    return "", 202

@aio.http
async def asgi_function(request):
    await request.body()
    return Response(status_code=202)

@aio.http
def asgi_sync_function(request):
    return Response(status_code=202)
'''
EVENT_HEADERS = {
    "ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": "/sagas/CreateOrderSaga",
    "ce-type": "io.knativesaga.goods.reserve", "ce-sagaid": str(uuid.uuid4()), "ce-sagatype": "CreateOrderSaga",
    "ce-sagastep": "1", "ce-partitionkey": str(uuid.uuid4()), "content-type": "application/json", "Prefer": "reply",
}


@click.group()
def main() -> None:
    """Micro-benchmarks of the function runtime's parts."""


@main.command()
@click.option("--requests", "count", default=4000, show_default=True)
@click.option("--concurrency", default=8, show_default=True)
def runtime(count: int, concurrency: int) -> None:
    """CPU per request of a function that reads an event and answers 202, by serving mode."""
    variants = [("Flask on gunicorn threads", "flask_function", False),
                ("ASGI, async function", "asgi_function", True),
                ("ASGI, sync function (thread pool)", "asgi_sync_function", True)]
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "functions_under_test.py"
        source.write_text(_FUNCTIONS)
        for port, (name, target, asgi) in enumerate(variants, start=7301):
            argv = [str(Path(sys.executable).with_name("functions-framework")), "--source", str(source),
                    "--target", target, "--host", "127.0.0.1", "--port", str(port), *(["--asgi"] if asgi else [])]
            server = subprocess.Popen(argv, env={**os.environ, "THREADS": "8"}, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                wait_until(lambda p=port: port_open(p), timeout=30, what=name)  # type: ignore[misc]
                per_request = asyncio.run(_load(f"http://127.0.0.1:{port}/", server.pid, count, concurrency))
                click.echo(f"{name:40} {per_request * 1000:.3f} ms of server CPU per request")
            finally:
                server.terminate()
                server.wait(timeout=30)


async def _load(url: str, pid: int, count: int, concurrency: int) -> float:
    import aiohttp

    tree = [pid, *measure.children(pid)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def one() -> None:
            async with http.post(url, data=b'{"goods_id": 1, "quantity": 2}', headers=EVENT_HEADERS) as answer:
                await answer.read()

        for _ in range(200):  # warm-up
            await one()
        before = sum(measure.cpu_seconds(p, tree=False) for p in tree)
        gate = asyncio.Semaphore(concurrency)

        async def limited() -> None:
            async with gate:
                await one()

        await asyncio.gather(*(limited() for _ in range(count)))
        return (sum(measure.cpu_seconds(p, tree=False) for p in tree) - before) / count


# --- serving ---
@main.command()
@click.option("--trials", default=10, show_default=True)
@click.option("--database-url", default="postgresql://saga:saga@127.0.0.1:55432/saga", show_default=True)
def serving(trials: int, database_url: str) -> None:
    """goods-reserve from spawn to its first answer (functions-framework's readiness answer, as the
    activator probes it), and master + worker RSS once idle."""
    from localstack.gateway import _HAND_OVER, _listen

    framework = [str(Path(sys.executable).with_name("functions-framework")), "--asgi"]
    serve = [sys.executable, "-m", "functions.platform.serve"]
    where = ["--source", "functions/goods/reserve.py", "--target", "goods_reserve", "--host", "127.0.0.1"]
    for port, (name, command) in enumerate([("functions-framework (gunicorn + uvicorn worker)", framework),
                                            ("functions/platform/serve.py (uvicorn)", serve)], start=7351):
        listener = _listen(port)
        env = {**os.environ, "DATABASE_URL": database_url, "THREADS": "8", "SAGA_LISTEN_FD": str(listener.fileno())}
        times, memory = [], []
        try:
            for _ in range(trials):
                began = time.perf_counter()
                process = subprocess.Popen(["bash", "-c", _HAND_OVER, name, *command, *where, "--port", str(port)],
                                           env=env, pass_fds=(listener.fileno(),), start_new_session=True,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    _probe(port)
                    times.append((time.perf_counter() - began) * 1000)
                    time.sleep(1.0)  # idle
                    memory.append(sum(measure.memory_kib(pid)["rss"]
                                      for pid in [process.pid, *measure.children(process.pid)]) / 1024)
                finally:
                    os.killpg(process.pid, 9)
                    process.wait(timeout=10)
        finally:
            listener.close()
        times.sort()
        click.echo(f"{name:50} first answer p50 {times[len(times) // 2]:.0f} ms, idle RSS {max(memory):.1f} MiB")


def _probe(port: int) -> None:
    import urllib.error
    import urllib.request

    with contextlib.suppress(urllib.error.HTTPError):  # functions-framework's 404 is an answer
        urllib.request.urlopen(f"http://127.0.0.1:{port}/robots.txt", timeout=30)


# --- database ---
_METADATA = sa.MetaData(schema="micro")
_INBOX = sa.Table("inbox", _METADATA, sa.Column("consumer", sa.Text, primary_key=True),
                  sa.Column("event_id", sa.Text, primary_key=True), sa.Column("reply", JSONB))
_GOODS = sa.Table("goods", _METADATA, sa.Column("id", sa.Integer, primary_key=True),
                  sa.Column("stock", sa.Integer, nullable=False))
_HELD = sa.Table("reservations", _METADATA, sa.Column("saga_id", sa.Text, primary_key=True),
                 sa.Column("goods_id", sa.Integer), sa.Column("state", sa.Text))
CLAIM = "INSERT INTO micro.inbox (consumer, event_id) VALUES ('c', %s) ON CONFLICT DO NOTHING RETURNING event_id"
STORED = "SELECT reply FROM micro.inbox WHERE consumer = 'c' AND event_id = %s"
ITEM = "SELECT id, stock FROM micro.goods WHERE id = %s FOR UPDATE"
HELD = "SELECT state FROM micro.reservations WHERE saga_id = %s FOR UPDATE"
TAKE = "UPDATE micro.goods SET stock = stock - 1 WHERE id = %s"
KEEP = "INSERT INTO micro.reservations (saga_id, goods_id, state) VALUES (%s, %s, 'RESERVED')"
ANSWER = "UPDATE micro.inbox SET reply = %s WHERE consumer = 'c' AND event_id = %s"
REPLY = {"type": "io.knativesaga.saga.reply", "data": {"unit_price": "1.00"}}
Transaction = Callable[[int], None]


@main.command()
@click.option("--database-url", default="postgresql://saga:saga@127.0.0.1:55432/saga", show_default=True)
@click.option("--transactions", "count", default=3000, show_default=True)
def database(database_url: str, count: int) -> None:
    """One goods-reserve-shaped transaction (claim, two locked reads, three writes), by execution style."""
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA IF EXISTS micro CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA micro"))
        _METADATA.create_all(conn)
        conn.execute(_GOODS.insert(), [{"id": i, "stock": 10**9} for i in range(100)])
    port = sa.make_url(database_url).port or 5432
    variants: list[tuple[str, Callable[[], Transaction]]] = [
        ("SQLAlchemy Core, pre-ping", lambda: _sqlalchemy(database_url, pre_ping=True)),
        ("SQLAlchemy Core", lambda: _sqlalchemy(database_url, pre_ping=False)),
        ("psycopg, one statement at a time", lambda: _psycopg(database_url, pipelined=False)),
        ("psycopg pipeline, own BEGIN/COMMIT", lambda: _psycopg(database_url, pipelined=True)),
    ]
    try:
        for name, make in variants:
            one = make()
            for i in range(200):  # warm-up: statements prepared, pool full
                one(i)
            segments_before, backend_before = _server(port)
            cpu, began = time.process_time(), time.perf_counter()
            for i in range(count):
                one(i)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - began
            segments, backend = (now - then for now, then in zip(_server(port), (segments_before, backend_before),
                                                                 strict=True))
            click.echo(f"{name:36} client {cpu * 1000 / count:.3f} ms CPU, PostgreSQL {backend * 1000 / count:.3f} ms "
                       f"CPU, {segments / count:.1f} round trips, {wall * 1000 / count:.3f} ms per transaction")
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA IF EXISTS micro CASCADE"))
        engine.dispose()


def _server(port: int) -> tuple[float, float]:
    """Answers PostgreSQL sent (data segments) and its backends' CPU seconds, so far."""
    found = sockets.established(sockets.on_ports([port])) or []
    backends = [int(p) for p in subprocess.run(["pgrep", "-f", "postgres: .* micro|postgres: saga"],
                                                capture_output=True, text=True, check=False).stdout.split()]
    return (float(sum(c.counters.get("data_segs_out", 0) for c in found)),
            sum(measure.cpu_seconds(p, tree=False) for p in backends))


def _sqlalchemy(url: str, *, pre_ping: bool) -> Transaction:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=1,
                              pool_pre_ping=pre_ping)

    def one(i: int) -> None:
        event, saga = str(uuid.uuid4()), str(uuid.uuid4())
        with engine.begin() as tx:
            tx.execute(insert(_INBOX).values(consumer="c", event_id=event).on_conflict_do_nothing()
                       .returning(_INBOX.c.event_id)).first()
            item = tx.execute(sa.select(_GOODS).where(_GOODS.c.id == i % 100).with_for_update()).one()
            tx.execute(sa.select(_HELD.c.state).where(_HELD.c.saga_id == saga).with_for_update()).first()
            tx.execute(sa.update(_GOODS).where(_GOODS.c.id == item.id).values(stock=_GOODS.c.stock - 1))
            tx.execute(sa.insert(_HELD).values(saga_id=saga, goods_id=item.id, state="RESERVED"))
            tx.execute(sa.update(_INBOX).where(_INBOX.c.consumer == "c", _INBOX.c.event_id == event)
                       .values(reply=REPLY))

    return one


def _psycopg(url: str, *, pipelined: bool) -> Transaction:
    conn = psycopg.connect(url, autocommit=pipelined, prepare_threshold=2)

    def statements(i: int, fetch: Callable[[Any], Any]) -> None:
        event, saga = str(uuid.uuid4()), str(uuid.uuid4())
        claimed, stored = conn.execute(CLAIM, (event,)), conn.execute(STORED, (event,))
        item, held = conn.execute(ITEM, (i % 100,)), conn.execute(HELD, (saga,))
        fetch(claimed), fetch(stored), fetch(held)
        goods_id = fetch(item)[0]
        conn.execute(TAKE, (goods_id,))
        conn.execute(KEEP, (saga, goods_id))
        conn.execute(ANSWER, (Jsonb(REPLY), event))

    def one(i: int) -> None:
        if pipelined:
            with conn.pipeline():
                conn.execute("BEGIN", prepare=False)
                statements(i, lambda cursor: cursor.fetchone())
                conn.execute("COMMIT", prepare=False)
        else:
            with conn.transaction():
                statements(i, lambda cursor: cursor.fetchone())

    return one


if __name__ == "__main__":
    main()

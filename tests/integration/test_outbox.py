"""The order outbox survives a crash between commit and publish, and a row leaves it only once the
broker has acknowledged the event."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner
from cloudevents.http import CloudEvent, from_http
from psycopg.conninfo import make_conninfo

from functions.order import service
from functions.parked import parked
from saga import outbox as outbox_
from saga.messages import stable_id
from saga.publisher import HttpPublisher
from saga.transaction import Database

pytestmark = pytest.mark.integration

# Places an order exactly as the order API does, with the crash point after the commit armed.
PLACE_AND_CRASH = """
import sys
from decimal import Decimal
from functions.order import service
from saga.crashpoints import crash_point
from saga.transaction import Database
Database(sys.argv[1], 1).run_sync(lambda tx: service.place_order(
    tx, placed_by="crash-test", customer_id="12223", goods_id=1, goods_total=2, order_total=Decimal("74"),
    idempotency_key=sys.argv[2]))
crash_point("order-api.after-commit")
raise SystemExit("the crash point did not fire")
"""


class Sink:
    """A stand-in broker ingress: answers with the queued statuses (or the status set for an event
    id in `refuse`), records what it accepted."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.refuse: dict[str, int] = {}
        self.accepted: list[CloudEvent] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                refused = sink.refuse.get(self.headers.get("ce-id", ""))
                status = refused or (sink.statuses.pop(0) if sink.statuses else 202)
                if status < 300:
                    sink.accepted.append(from_http(dict(self.headers), body))
                answer = b"refused by the test" if refused else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/knative-saga/saga"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    running = Sink([503])
    yield running
    running.close()


def outbox_ids(database: Database) -> set[str]:
    return {event["id"] for event in database.autocommit(lambda tx: outbox_.pending(tx, service.outbox))}


def place(database: Database, label: str) -> CloudEvent:
    _, command = database.run_sync(lambda tx: service.place_order(
        tx, placed_by=label, customer_id="12223", goods_id=1, goods_total=1, order_total=Decimal("37"),
        idempotency_key=f"{label}-{uuid.uuid4().hex}",
    ))
    assert command is not None
    return command


def publish_and_drain(database: Database, publisher: HttpPublisher, commands: list[CloudEvent]) -> None:
    """Each command published as the function that wrote it does, until its row's fate is settled."""
    published = outbox_.PublishedRows(database, service.outbox)

    async def publish() -> None:
        await asyncio.gather(*(outbox_.publish_after_commit(published, publisher, [c]) for c in commands))
        await published.drained()

    asyncio.run(publish())


def test_command_committed_before_a_crash_is_published_by_the_sweep(database: Database, sink: Sink) -> None:
    key = uuid.uuid4().hex
    crashed = subprocess.run(
        [sys.executable, "-c", PLACE_AND_CRASH, database.pool.conninfo, key],
        env={**os.environ, "SAGA_CRASH_POINTS": "order-api.after-commit"}, capture_output=True, timeout=60,
    )
    assert crashed.returncode == 137, crashed.stderr.decode()
    order_id = stable_id("order", "crash-test", key)
    command_id = stable_id("CreateOrderSaga", order_id, 1, "invoke")
    assert command_id in outbox_ids(database), "the command committed with the order must wait in the outbox"

    async def sweeps() -> tuple[int, int]:
        # The sweep takes rows older than a few seconds: this one is, as far as it can tell.
        publisher = HttpPublisher(sink.url)
        refused = await outbox_.sweep(database, service.outbox, publisher, older_than=0)  # 503: the row stays
        assert command_id in outbox_ids(database)
        return refused, await outbox_.sweep(database, service.outbox, publisher, older_than=0)  # now 202

    refused, published_now = asyncio.run(sweeps())
    assert refused == 0 and published_now >= 1
    assert command_id not in outbox_ids(database)
    published = [event for event in sink.accepted if event["id"] == command_id]
    assert len(published) == 1
    assert published[0]["type"] == "io.knativesaga.goods.reserve"
    assert published[0]["partitionkey"] == order_id
    assert json.loads(json.dumps(published[0].get_data())) == {"goods_id": 1, "quantity": 2}


def test_unreachable_broker_keeps_rows(database: Database) -> None:
    command = place(database, "unreachable")
    # Port 9 (discard) is closed on loopback: a connection error, not an answer.
    publish_and_drain(database, HttpPublisher("http://127.0.0.1:9/"), [command])
    assert command["id"] in outbox_ids(database)


def test_published_rows_leave_the_outbox_after_the_answer(database: Database, sink: Sink) -> None:
    """Ten orders published at once: each event reaches the broker once, and every row is deleted,
    those acknowledged while a delete ran in the next one."""
    sink.statuses.clear()  # the broker takes every event
    commands = [place(database, f"published-{n}") for n in range(10)]
    publish_and_drain(database, HttpPublisher(sink.url), commands)
    ids = {command["id"] for command in commands}
    assert not ids & outbox_ids(database)
    assert sorted(event["id"] for event in sink.accepted if event["id"] in ids) == sorted(ids)


def test_a_fresh_row_is_left_to_its_writer(database: Database, sink: Sink) -> None:
    """The sweep takes only rows older than a few seconds: a fresh one is being published by the
    function that wrote it, and taking it too would publish it twice."""
    command = place(database, "fresh")
    asyncio.run(outbox_.sweep(database, service.outbox, HttpPublisher(sink.url)))
    assert command["id"] not in {event["id"] for event in sink.accepted}
    assert command["id"] in outbox_ids(database)


def parked_ids(database: Database) -> dict[str, int]:
    return {row.event_id: row.status for row in database.autocommit(lambda tx: outbox_.parked(tx, service.outbox))}


def test_a_row_the_broker_refuses_for_good_is_parked_and_the_rows_behind_it_go_out(
    database: Database, sink: Sink
) -> None:
    """A 4xx is permanent: the row moves to the parked table with the answer; the sweep goes on with
    the next rows, and the next sweep does not meet the poisoned one again."""
    sink.statuses.clear()
    before, poisoned, after = (place(database, f"poison-{n}") for n in range(3))
    sink.refuse[poisoned["id"]] = 400

    async def sweeps() -> tuple[int, int]:
        publisher = HttpPublisher(sink.url)
        return (await outbox_.sweep(database, service.outbox, publisher, older_than=0),
                await outbox_.sweep(database, service.outbox, publisher, older_than=0))

    first, second = asyncio.run(sweeps())
    assert first >= 2 and second == 0
    accepted = [event["id"] for event in sink.accepted]
    assert before["id"] in accepted and after["id"] in accepted and poisoned["id"] not in accepted
    assert not {before["id"], poisoned["id"], after["id"]} & outbox_ids(database)
    assert parked_ids(database)[poisoned["id"]] == 400
    [row] = [r for r in database.autocommit(lambda tx: outbox_.parked(tx, service.outbox))
             if r.event_id == poisoned["id"]]
    assert row.reason == "refused by the test" and row.event["type"] == "io.knativesaga.goods.reserve"


@pytest.mark.parametrize("status", [429, 403, 503])
def test_a_failure_that_says_nothing_against_the_event_leaves_the_row_queued(
    database: Database, sink: Sink, status: int
) -> None:
    """Busy, a misconfigured mesh, a broker fault: nothing is parked, the row waits for the next sweep."""
    sink.statuses.clear()
    command = place(database, f"busy-{status}")
    sink.refuse[command["id"]] = status
    publish_and_drain(database, HttpPublisher(sink.url), [command])
    assert command["id"] in outbox_ids(database)
    assert command["id"] not in parked_ids(database)


def test_a_refused_event_published_after_commit_is_parked(database: Database, sink: Sink) -> None:
    sink.statuses.clear()
    command = place(database, "refused-at-once")
    sink.refuse[command["id"]] = 413
    publish_and_drain(database, HttpPublisher(sink.url), [command])
    assert command["id"] not in outbox_ids(database)
    assert parked_ids(database)[command["id"]] == 413


def test_saga_parked_lists_what_the_broker_refused(database: Database, sink: Sink) -> None:
    sink.statuses.clear()
    command = place(database, "listed")
    sink.refuse[command["id"]] = 400
    asyncio.run(outbox_.sweep(database, service.outbox, HttpPublisher(sink.url), older_than=0))
    listed = CliRunner().invoke(parked, ["--database-url", database.pool.conninfo, "--schema", "orders"])
    assert listed.exit_code == 0, listed.output
    [entry] = [json.loads(line) for line in listed.output.splitlines() if json.loads(line)["eventId"] == command["id"]]
    assert entry["status"] == 400 and entry["reason"] == "refused by the test"
    assert entry["type"] == "io.knativesaga.goods.reserve" and entry["event"]["sagaid"] == command["sagaid"]


def test_saga_parked_says_so_when_the_database_has_no_parked_tables(database: Database) -> None:
    elsewhere = make_conninfo(database.pool.conninfo, dbname="postgres")  # the server's own database
    listed = CliRunner().invoke(parked, ["--database-url", elsewhere])
    assert listed.exit_code == 1
    assert "none of the services' parked tables is in this database" in listed.output

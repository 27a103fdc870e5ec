"""The order outbox survives a crash between commit and publish, and a row leaves it only once the
broker has acknowledged the event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import sqlalchemy as sa
from cloudevents.http import CloudEvent, from_http

from functions.order import schema
from saga.messages import stable_id
from saga.outbox import Relay, pending

pytestmark = pytest.mark.integration

# Places an order exactly as the order API does, with the crash point after the commit armed.
PLACE_AND_CRASH = """
import sys
from decimal import Decimal
import sqlalchemy as sa
from functions.order import service
from saga.crashpoints import crash_point
engine = sa.create_engine(sys.argv[1])
with engine.begin() as tx:
    service.place_order(tx, placed_by="crash-test", customer_id="12223", goods_id=1, goods_total=2,
                        order_total=Decimal("74"), idempotency_key=sys.argv[2])
crash_point("order-api.after-commit")
raise SystemExit("the crash point did not fire")
"""


class Sink:
    """A stand-in broker ingress: answers with the queued statuses, records what it accepted."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.accepted: list[CloudEvent] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = sink.statuses.pop(0) if sink.statuses else 202
                if status < 300:
                    sink.accepted.append(from_http(dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

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


def outbox_ids(db: sa.Engine) -> set[str]:
    with db.connect() as tx:
        return {event["id"] for event in pending(tx, schema.outbox)}


def test_command_committed_before_a_crash_is_published_by_the_sweep(db: sa.Engine, sink: Sink) -> None:
    key = uuid.uuid4().hex
    url = db.url.render_as_string(hide_password=False)
    crashed = subprocess.run(
        [sys.executable, "-c", PLACE_AND_CRASH, url, key],
        env={**os.environ, "SAGA_CRASH_POINTS": "order-api.after-commit"}, capture_output=True, timeout=60,
    )
    assert crashed.returncode == 137, crashed.stderr.decode()
    order_id = stable_id("order", "crash-test", key)
    command_id = stable_id(order_id, 1, "invoke")
    assert command_id in outbox_ids(db), "the command committed with the order must wait in the outbox"

    with httpx.Client(timeout=5) as client:
        relay = Relay(db, schema.outbox, sink.url, client)
        assert relay.publish([command_id]) == 0  # the broker answers 503: the row must stay
        assert command_id in outbox_ids(db)
        relay.sweep()  # now 202: published once, then gone
    assert command_id not in outbox_ids(db)
    published = [event for event in sink.accepted if event["id"] == command_id]
    assert len(published) == 1
    assert published[0]["type"] == "io.knativesaga.goods.reserve"
    assert published[0]["partitionkey"] == order_id
    assert json.loads(json.dumps(published[0].get_data())) == {"goods_id": 1, "quantity": 2}


def test_unreachable_broker_keeps_rows(db: sa.Engine) -> None:
    from decimal import Decimal

    from functions.order import service

    with db.begin() as tx:
        _, command = service.place_order(
            tx, placed_by="unreachable-test", customer_id="12223", goods_id=1, goods_total=1,
            order_total=Decimal("37"), idempotency_key=None,
        )
    assert command is not None
    with httpx.Client(timeout=1) as client:
        # Port 9 (discard) is closed on loopback: a connection error, not an answer.
        assert Relay(db, schema.outbox, "http://127.0.0.1:9/", client).publish([command["id"]]) == 0
    assert command["id"] in outbox_ids(db)

"""The console's parts that need no stack: a saga's history turned into the timeline the page draws
(histories recorded by the real engine on the order saga), the error a dead letter was parked with,
and the screenshots in docs/img against the page they show."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from functions.account.messages import CreditReserved, CustomerCreditLimitExceeded
from functions.console import assets
from functions.console.dead_letters import _error_text
from functions.console.timeline import lanes_of, timeline
from functions.goods.messages import GoodsReleased, GoodsReleaseRefused, GoodsReserved
from functions.order.create_order_saga import CreateOrderSagaData, create_order_saga
from localstack.infra import repo_root
from saga.dsl import RetryPolicy
from saga.engine import SagaEngine
from tests.e2e import screenshots
from tests.unit.fakes import InMemorySagaStore, RecordingTx, answer, applied

START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LANES = lanes_of(create_order_saga.steps)


class Recorder:
    """The order saga on the real engine; each call's history entries stamped with the time it happened,
    as the store's `describe` serves them."""

    def __init__(self, **engine: Any) -> None:
        self.store = InMemorySagaStore()
        self.engine = SagaEngine(create_order_saga, self.store, **engine)
        self.tx = RecordingTx()
        self.seen = 0
        self.entries: list[dict[str, Any]] = []

    def at(self, ms: float, result: Any) -> Any:
        for entry in self.store.history.get(("CreateOrderSaga", "o-1"), [])[self.seen:]:
            self.entries.append({"at": (START + timedelta(milliseconds=ms)).isoformat(), "step": entry.step,
                                 "name": entry.name, "event": str(entry.event), **entry.detail})
        self.seen = len(self.entries)
        return result

    def start(self, ms: float) -> Any:
        data = CreateOrderSagaData(order_id="o-1", customer_id="c", goods_id=1, goods_total=3,
                                   order_total=Decimal("111"), placed_by="u")
        return self.at(ms, self.engine.start(self.tx, "o-1", data))

    def reply(self, ms: float, command: Any, reply: Any) -> Any:
        return self.at(ms, applied(self.engine, self.tx, answer(command, reply)))

    def sweep(self, ms: float) -> Any:
        self.store.past_deadline.add("o-1")
        try:
            return self.at(ms, self.engine.expire(self.tx, "o-1"))
        finally:
            self.store.past_deadline.discard("o-1")

    @property
    def finished(self) -> bool:
        return bool(self.store.instances["o-1"].finished)


def steps(drawn: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["kind"], item["name"]) for item in drawn["items"]]


def compensated_by_credit() -> Recorder:
    saga = Recorder()
    reserve = saga.start(0)
    credit = saga.reply(12, reserve, GoodsReserved(unit_price=Decimal("37")))
    release = saga.reply(20, credit, CustomerCreditLimitExceeded(available_credit=Decimal("100")))
    saga.reply(35, release, GoodsReleased(quantity=3))
    return saga


def test_a_compensated_saga_is_drawn_step_by_step_with_each_latency() -> None:
    saga = compensated_by_credit()
    drawn = timeline(saga.entries, LANES, now=START + timedelta(seconds=5), finished=saga.finished)
    assert steps(drawn) == [("local", "create"), ("command", "reserve_goods"), ("command", "reserve_credit"),
                            ("compensation", "release_goods"), ("local-compensation", "reject")]
    spans = {item["name"]: item for item in drawn["items"]}
    assert (spans["reserve_goods"]["start"], spans["reserve_goods"]["end"]) == (0, 12)
    assert [spans[name]["latencyMs"] for name in ("reserve_goods", "reserve_credit", "release_goods")] == [12, 8, 15]
    assert [(spans[name]["reply"], spans[name]["outcome"]) for name in ("reserve_goods", "reserve_credit")] == [
        ("GoodsReserved", "SUCCESS"), ("CustomerCreditLimitExceeded", "FAILURE")]
    assert (spans["release_goods"]["lane"], spans["reject"]["lane"]) == (1, 0), "each in the lane of its step"
    assert [(mark["event"], mark["lane"]) for mark in drawn["marks"]] == [
        ("STARTED", None), ("COMPENSATING", None), ("FINISHED", None)]
    assert drawn["durationMs"] == 35, "a finished saga ends at its last move, whatever the time now"
    assert [lane["compensation"] for lane in drawn["lanes"]] == ["reject", "release_goods", "release_credit", None]


def test_retries_their_waits_the_parked_time_and_the_resume_are_drawn() -> None:
    saga = Recorder(retry=RetryPolicy(attempts=2, first_delay=1.0))
    reserve = saga.start(0)
    credit = saga.reply(10, reserve, GoodsReserved(unit_price=Decimal("37")))
    release = saga.reply(20, credit, CustomerCreditLimitExceeded(available_credit=Decimal("100")))
    assert saga.reply(30, release, GoodsReleaseRefused(reason="stocktake")) is None
    again = saga.sweep(1500)
    assert saga.reply(1510, again, GoodsReleaseRefused(reason="stocktake")) is None
    assert saga.store.instances["o-1"].parked_reason is not None
    now = START + timedelta(seconds=9)
    parked = timeline(saga.entries, LANES, now=now, finished=False)
    assert steps(parked)[-3:] == [("retry-wait", "release_goods"), ("compensation", "release_goods"),
                                  ("parked", "release_goods")]
    wait, second, band = parked["items"][-3:]
    assert (wait["start"], wait["end"], wait["plannedEnd"]) == (30, 1500, 1030), "the wait lasted until the sweep"
    assert (second["attempt"], second["outcome"], second["latencyMs"]) == (2, "FAILURE", 10)
    assert (band["start"], band["end"], band["result"]) == (1510, None, "waiting"), "parked until now"
    assert parked["durationMs"] == parked["nowMs"] == 9000

    resumed = saga.at(4000, saga.engine.resume(saga.tx, "o-1", by="admin"))
    saga.reply(4020, resumed, GoodsReleased(quantity=3))
    drawn = timeline(saga.entries, LANES, now=now, finished=saga.finished)
    assert steps(drawn)[-3:] == [("parked", "release_goods"), ("compensation", "release_goods"),
                                 ("local-compensation", "reject")]
    band, last = drawn["items"][-3], drawn["items"][-2]
    assert (band["end"], band["result"]) == (4000, "over")
    assert (last["resumed"], last["outcome"], last["latencyMs"]) == (True, "SUCCESS", 20)
    marks = [(mark["event"], mark.get("by")) for mark in drawn["marks"] if mark["lane"] is not None]
    assert marks == [("PARKED", None), ("RESUMED", "admin")]


def test_a_silent_participant_is_drawn_timed_out_and_a_running_saga_open_until_now() -> None:
    saga = Recorder(step_timeout=10)
    saga.start(0)
    now = START + timedelta(seconds=4)
    running = timeline(saga.entries, LANES, now=now, finished=False)
    waiting = running["items"][-1]
    assert (waiting["kind"], waiting["end"], waiting["result"]) == ("command", None, "waiting")
    assert running["durationMs"] == 4000
    release = saga.sweep(11000)
    saga.reply(11020, release, GoodsReleased(quantity=0))
    drawn = timeline(saga.entries, LANES, now=now, finished=saga.finished)
    silent = drawn["items"][1]
    assert (silent["name"], silent["result"], silent["latencyMs"]) == ("reserve_goods", "timed-out", 11000)
    assert ("TIMED_OUT", 1) in [(mark["event"], mark["lane"]) for mark in drawn["marks"]]


def test_an_empty_history_draws_nothing() -> None:
    assert timeline([], LANES, now=START, finished=False)["items"] == []


def test_a_late_credit_reply_closes_nothing_twice() -> None:
    saga = compensated_by_credit()
    before = timeline(saga.entries, LANES, now=START, finished=True)
    late = applied(saga.engine, saga.tx, answer(_credit_command(saga), CreditReserved(available_credit=Decimal("1"))))
    assert late is None
    saga.at(90, None)
    after = timeline(saga.entries, LANES, now=START, finished=True)
    assert steps(after) == steps(before), "an ignored reply is a mark, not a step"
    assert after["marks"][-1]["event"] == "REPLY_IGNORED"


def _credit_command(saga: Recorder) -> Any:
    """The credit command the saga sent (sent again: the same id, so it answers no awaited command now)."""
    from functions.account.messages import ReserveCredit
    from saga.messages import command_event

    sent = next(e for e in saga.entries if e["event"] == "COMMAND_SENT" and e["name"] == "reserve_credit")
    return command_event(ReserveCredit(customer_id="c", amount=Decimal("111")), event_id=sent["commandId"],
                         source=saga.engine.source, saga_type="CreateOrderSaga", saga_id="o-1", step=2)


@pytest.mark.parametrize(("data", "shown"), [
    (json.dumps({"type": "about:blank", "title": "Invalid message", "status": 400, "detail": "no apples"}),
     "Invalid message: no apples"),
    ("upstream connect error", "upstream connect error"),
    (json.dumps(["not", "a", "problem"]), '["not", "a", "problem"]'),
])
def test_a_dead_letters_error_is_the_subscribers_answer(data: str, shown: str) -> None:
    assert _error_text(base64.b64encode(data.encode()).decode()) == shown


def test_a_dead_letters_error_that_is_not_base64_is_shown_as_it_came() -> None:
    assert _error_text("not base64!") == "not base64!"
    assert _error_text(None) is None


def test_the_screenshots_in_the_docs_show_the_page_as_it_is() -> None:
    """Regenerate them with `make screenshots` (the console's browser tests, writing into docs/img)."""
    shots = sorted(screenshots.DOCS.glob("console-*.png"))
    assert {shot.name for shot in shots} == {"console-sagas.png", "console-saga.png", "console-parked.png",
                                             "console-dead-letters.png"}
    stale = [shot.name for shot in shots if screenshots.stamp_of(shot.read_bytes()) != assets.digest()]
    assert not stale, f"{stale} show an older page: run `make screenshots`"
    readme = (repo_root() / "README.md").read_text()
    assert {shot.name for shot in shots} <= set(re.findall(r"docs/img/(console-[a-z-]+\.png)", readme))


def test_a_stamp_survives_in_a_valid_png() -> None:
    png = screenshots.SIGNATURE + _chunk(b"IHDR", b"\0" * 13) + _chunk(b"IEND", b"")
    stamped = screenshots.stamped(png, "abc")
    assert screenshots.stamp_of(stamped) == "abc" and screenshots.stamp_of(png) is None
    assert stamped.endswith(_chunk(b"IEND", b"")) and stamped.startswith(png[:33])


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_the_trace_link_is_jaegers_unless_the_viewer_says_where_the_id_goes() -> None:
    from functions.console.api import _trace_link

    assert _trace_link("http://jaeger:16686", "ab" * 16) == f"http://jaeger:16686/trace/{'ab' * 16}"
    assert _trace_link("http://zipkin:9411/zipkin/traces/{traceId}", "cd" * 16) == (
        f"http://zipkin:9411/zipkin/traces/{'cd' * 16}")

"""A saga's history as the console draws it: one lane per step of its definition; a span from each
command or compensation sent to the answer that closed it (its latency); the waits before retries and
the time spent PARKED as spans of their own; local steps as points; the moments that matter (timed
out, resumed, a reply ignored, the sweep failing) as marks. Times are milliseconds from the saga's
start. Plain data in, plain data out: the page only draws it (functions/console/static/console.js).

The history is the engine's (saga/engine.py, `Event`): a reply is recorded only when it answers the
command its saga awaits at that step, so the span open in a lane is the one a reply closes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Entry = Mapping[str, Any]
SENT = {"COMMAND_SENT": "command", "COMPENSATION_SENT": "compensation"}
# Kinds a lane holds, in the order they happen: what the page draws as the saga's steps.
STEP_KINDS = ("local", "command", "compensation", "local-compensation")
LANELESS = {"STARTED", "COMPENSATING", "FINISHED"}  # the saga's own moments: drawn across every lane
MARKED = {"TIMED_OUT", "RESUMED", "REPLY_IGNORED", "SWEEP_FAILED", "PARKED"}
# What an operator reads in a mark's tooltip; the rest of an entry is ids.
DETAILS = ("reason", "by", "parkedFor", "overdueBy", "attempt", "attempts", "outcome", "inSeconds", "commandId")


def lanes_of(steps: Sequence[Any]) -> list[dict[str, Any]]:
    """A definition's steps (saga.dsl) as lanes: the step's name and its compensation's, if any."""
    return [{"step": index, "name": step.name, "compensation": step.compensation_name}
            for index, step in enumerate(steps)]


def timeline(history: Sequence[Entry], lanes: Sequence[Mapping[str, Any]], *, now: datetime,
             finished: bool) -> dict[str, Any]:
    """`history` as drawn (see the module's docstring); `now` ends what is still open."""
    if not history:
        return {"startedAt": None, "durationMs": 0, "nowMs": 0, "lanes": list(lanes), "items": [], "marks": []}
    start = _moment(history[0]["at"])

    def ms(at: Any) -> float:
        return round((_moment(at) - start).total_seconds() * 1000, 1)

    items: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    waiting: dict[int, dict[str, Any]] = {}  # lane -> the command or compensation awaiting its answer
    pausing: dict[int, dict[str, Any]] = {}  # lane -> the retry wait or the parked span still running
    answered: dict[int, dict[str, Any]] = {}  # lane -> the compensation a reply just closed
    for entry in history:
        event, lane, at = str(entry["event"]), int(entry["step"]), ms(entry["at"])
        if event in SENT:
            _end(pausing.pop(lane, None), at)
            _close(waiting.pop(lane, None), at, "resent" if entry.get("resent") else "superseded")
            item = _item(SENT[event], lane, entry, at, result="waiting", commandType=entry.get("commandType"),
                         attempt=int(entry.get("attempt", 1)), resent=bool(entry.get("resent")),
                         resumed=bool(entry.get("resumed")))
            items.append(item)
            waiting[lane] = item
        elif event == "REPLY_RECEIVED":
            replied = waiting.pop(lane, None)
            if replied is not None:
                _close(replied, at, "replied", reply=entry["name"], outcome=entry.get("outcome"))
                if replied["kind"] == "compensation":
                    answered[lane] = replied
        elif event == "COMPENSATION_DONE":
            closed = answered.pop(lane, None)
            if closed is None or closed["name"] != entry["name"]:  # no reply before it: a local compensation
                items.append(_item("local-compensation", lane, entry, at, end=at, result="done"))
        elif event == "LOCAL_DONE":
            items.append(_item("local", lane, entry, at, end=at, result="done"))
        elif event == "RETRY_SCHEDULED":
            planned = at + float(entry.get("inSeconds", 0)) * 1000
            item = _item("retry-wait", lane, entry, at, result="waiting", plannedEnd=round(planned, 1),
                         attempt=entry.get("attempt"), reason=entry.get("reason"))
            items.append(item)
            pausing[lane] = item
        if event == "TIMED_OUT":
            _close(waiting.pop(lane, None), at, "timed-out")
        if event == "PARKED":
            _end(pausing.pop(lane, None), at)
            item = _item("parked", lane, entry, at, result="waiting", reason=entry.get("reason"))
            items.append(item)
            pausing[lane] = item
        if event in MARKED or event in LANELESS:
            marks.append({"event": event, "lane": None if event in LANELESS else lane, "at": at,
                          "name": entry["name"], **{k: entry[k] for k in DETAILS if k in entry}})
    now_ms = ms(now.isoformat())
    if finished:  # nothing is running: a span still open was never answered (the saga ended without it)
        for item in items:
            if item["end"] is None:
                _close(item, max(item["start"], marks[-1]["at"] if marks else item["start"]), "unanswered")
    ends = [at for item in items for at in (item["start"], item["end"]) if at is not None]
    ends += [mark["at"] for mark in marks]
    duration = max([*ends, 0.0] if finished else [*ends, now_ms])
    items.sort(key=lambda item: item["start"])  # stable: what happened at one moment keeps its order
    return {"startedAt": _moment(history[0]["at"]).isoformat(), "durationMs": duration, "nowMs": now_ms,
            "lanes": list(lanes), "items": items, "marks": marks}


def _item(kind: str, lane: int, entry: Entry, start: float, *, end: float | None = None, result: str,
          **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "lane": lane, "name": entry["name"], "start": start, "end": end, "latencyMs": None,
            "result": result, **{k: v for k, v in extra.items() if v is not None}}


def _close(item: dict[str, Any] | None, at: float, result: str, **extra: Any) -> None:
    """A command or compensation answered (or given up on) at `at`: its latency is the span."""
    if item is not None:
        item.update(end=at, latencyMs=round(at - item["start"], 1), result=result, **extra)


def _end(item: dict[str, Any] | None, at: float) -> None:
    """A wait or a parked span over: the saga moved on at `at`."""
    if item is not None:
        item.update(end=at, result="over")


def _moment(at: Any) -> datetime:
    return at if isinstance(at, datetime) else datetime.fromisoformat(str(at))

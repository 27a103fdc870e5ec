"""The DSL's validation and the engine's compensation order, on a toy saga."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from saga.dsl import DefinitionError, step
from saga.engine import SagaEngine
from saga.messages import Command, Outcome, Reply
from tests.unit.fakes import InMemorySagaStore, answer, applied


@dataclasses.dataclass(frozen=True, kw_only=True)
class Data:
    n: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Do(Command):
    TYPE: ClassVar[str] = "test.do"
    what: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Done(Reply):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class Refused(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE


class Journal(list[str]):
    """The transaction object local steps receive: here it records what they did."""


def begin(tx: Journal, data: Data) -> None:
    tx.append("begin")


def undo_begin(tx: Journal, data: Data) -> None:
    tx.append("undo begin")


def a(data: Data) -> Do:
    return Do(what="a")


def undo_a(data: Data) -> Do:
    return Do(what="undo a")


def b(data: Data) -> Do:
    return Do(what="b")


def undo_b(data: Data) -> Do:
    return Do(what="undo b")


def c(data: Data) -> Do:
    return Do(what="c")


toy = (
    step().invoke_local(begin).with_compensation(undo_begin)
    .step().invoke_participant(a).with_compensation(undo_a)
    .step().invoke_participant(b).with_compensation(undo_b)
    .step().invoke_participant(c)
    .build(name="Toy", data_type=Data)
)


def test_failure_compensates_completed_steps_in_reverse_order() -> None:
    tx, engine = Journal(), SagaEngine(toy, InMemorySagaStore())
    sent = [engine.start(tx, "s1", Data())]
    sent.append(applied(engine, tx, answer(sent[-1], Done())))
    sent.append(applied(engine, tx, answer(sent[-1], Done())))
    sent.append(applied(engine, tx, answer(sent[-1], Refused())))  # c refused
    sent.append(applied(engine, tx, answer(sent[-1], Done())))  # undo b done
    assert applied(engine, tx, answer(sent[-1], Done())) is None  # undo a done
    assert [e.get_data()["what"] for e in sent if e is not None] == ["a", "b", "c", "undo b", "undo a"]
    assert tx == ["begin", "undo begin"]
    assert engine.store.instances["s1"].finished


def test_successful_saga_runs_no_compensation() -> None:
    tx, engine = Journal(), SagaEngine(toy, InMemorySagaStore())
    command = engine.start(tx, "s2", Data())
    for _ in range(3):
        command = applied(engine, tx, answer(command, Done()))
    assert command is None
    assert tx == ["begin"]


def test_on_reply_rejects_non_reply_classes() -> None:
    with pytest.raises(DefinitionError):
        step().invoke_participant(a).on_reply(Do, lambda d, r: d)  # type: ignore[arg-type]


def test_on_reply_rejects_a_second_handler_for_the_same_reply() -> None:
    with pytest.raises(DefinitionError):
        step().invoke_participant(a).on_reply(Done, lambda d, r: d).on_reply(Done, lambda d, r: d)


def test_build_requires_dataclass_data_and_unique_step_names() -> None:
    with pytest.raises(DefinitionError):
        step().invoke_participant(a).build(name="X", data_type=dict)
    with pytest.raises(DefinitionError):
        step().invoke_participant(a).step().invoke_participant(a).build(name="X", data_type=Data)


def test_a_second_compensation_is_refused() -> None:
    with pytest.raises(DefinitionError):
        step().invoke_local(begin).with_compensation(undo_begin).with_compensation(undo_begin)

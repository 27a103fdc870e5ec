"""The failure policy on toy sagas: compensations and steps after the pivot are tried again with
backoff, PARKED past their budget, resumed by a person; the sweep's own failures are counted."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
from cloudevents.http import CloudEvent

from saga.dsl import DefinitionError, RetryPolicy, fail, step
from saga.engine import Event, SagaEngine, SagaState
from saga.errors import InvalidMessage, NotParked
from saga.messages import Command, Outcome, Reply
from tests.unit.fakes import InMemorySagaStore, answer, applied
from tests.unit.test_dsl_engine import Data, Do, Done, Journal, Refused, begin, undo_begin

POLICY = RetryPolicy(attempts=3, first_delay=2.0, max_delay=5.0)
STEP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Released(Reply):
    pass


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReleaseRefused(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE


@dataclasses.dataclass(frozen=True, kw_only=True)
class Release(Command):
    TYPE: ClassVar[str] = "test.release"
    HANDLER: ClassVar[str] = "/test/participant"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (Released, ReleaseRefused)


def hold(data: Data) -> Do:
    return Do(what="hold")


def release(data: Data) -> Release:
    return Release()


def commit(data: Data) -> Do:
    return Do(what="commit")


def ship(data: Data) -> Do:
    return Do(what="ship")


def refuse_on_done(data: Data, reply: Done) -> Data:
    return fail(dataclasses.replace(data, n=data.n + 1))  # type: ignore[return-value]


# begin (local, undone) -> hold (released) -> commit: the pivot -> ship: retriable
pivoted = (
    step().invoke_local(begin).with_compensation(undo_begin)
    .step().invoke_participant(hold).with_compensation(release)
    .step().invoke_participant(commit).pivot()
    .step().invoke_participant(ship)
    .build(name="Pivoted", data_type=Data, retry=POLICY)
)


def engine_for() -> tuple[Journal, SagaEngine[Data]]:
    return Journal(), SagaEngine(pivoted, InMemorySagaStore(), step_timeout=STEP_TIMEOUT)


def overdue(engine: SagaEngine[Data], saga_id: str) -> CloudEvent | None:
    """The sweep, once the saga's deadline has passed."""
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    store.past_deadline.add(saga_id)
    try:
        return engine.expire(Journal(), saga_id)
    finally:
        store.past_deadline.discard(saga_id)


def compensating(saga_id: str) -> tuple[Journal, SagaEngine[Data], CloudEvent]:
    """A saga whose commit was refused: it is releasing what hold took."""
    tx, engine = engine_for()
    held = engine.start(tx, saga_id, Data())
    assert held is not None
    committed = applied(engine, tx, answer(held, Done()))
    assert committed is not None
    undo = applied(engine, tx, answer(committed, Refused()))
    assert undo is not None and undo["type"] == Release.TYPE
    return tx, engine, undo


def events(engine: SagaEngine[Data], saga_id: str) -> list[str]:
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    return [str(h.event) for h in store.history[saga_id]]


def instance(engine: SagaEngine[Data], saga_id: str):  # type: ignore[no-untyped-def]
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    return store.instances[saga_id]


def test_a_failed_compensation_is_retried_after_a_backoff_under_a_new_id_then_done() -> None:
    tx, engine, undo = compensating("r1")
    assert applied(engine, tx, answer(undo, ReleaseRefused())) is None, "nothing is sent before the backoff"
    waiting = instance(engine, "r1")
    assert (waiting.awaiting, waiting.attempt, waiting.deadline_after, waiting.finished) == (None, 1, 2.0, False)
    assert events(engine, "r1")[-1] == Event.RETRY_SCHEDULED
    # The old command answered again (a redelivery): it answers nothing the saga awaits.
    assert applied(engine, tx, answer(undo, ReleaseRefused())) is None
    assert events(engine, "r1")[-1] == Event.REPLY_IGNORED
    retry = overdue(engine, "r1")
    assert retry is not None and retry["type"] == Release.TYPE
    assert retry["id"] != undo["id"], "a new id, or the participant's inbox answers the old FAILURE again"
    assert (instance(engine, "r1").attempt, instance(engine, "r1").deadline_after) == (2, STEP_TIMEOUT)
    assert applied(engine, tx, answer(retry, Released())) is None
    done = instance(engine, "r1")
    assert done.finished and done.compensating and tx == ["begin", "undo begin"]
    assert events(engine, "r1")[-2:] == [Event.COMPENSATION_DONE, Event.FINISHED]


def test_the_backoff_doubles_up_to_its_cap() -> None:
    assert [POLICY.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 5.0, 5.0]
    with pytest.raises(DefinitionError):
        RetryPolicy(attempts=0)
    with pytest.raises(DefinitionError):
        RetryPolicy(first_delay=10, max_delay=5)


def test_a_compensation_failing_past_its_budget_parks_the_saga_until_resumed() -> None:
    tx, engine, command = compensating("r2")
    for _ in range(POLICY.attempts - 1):
        assert applied(engine, tx, answer(command, ReleaseRefused())) is None
        retried = overdue(engine, "r2")
        assert retried is not None
        command = retried
    assert applied(engine, tx, answer(command, ReleaseRefused())) is None
    parked = instance(engine, "r2")
    assert parked.parked_reason is not None and "release answered ReleaseRefused, 3 attempt(s)" in parked.parked_reason
    assert (parked.deadline_after, parked.awaiting, parked.finished) == (None, None, False)
    assert events(engine, "r2")[-1] == Event.PARKED
    assert overdue(engine, "r2") is None, "the sweep leaves a parked saga alone"
    resumed = engine.resume(tx, "r2", by="operator")
    assert resumed["type"] == Release.TYPE and resumed["id"] != command["id"]
    after = instance(engine, "r2")
    assert (after.parked_reason, after.attempt, after.deadline_after) == (None, 1, STEP_TIMEOUT)
    assert events(engine, "r2")[-2:] == [Event.RESUMED, Event.COMPENSATION_SENT]
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    assert store.history["r2"][-1].detail["resumed"] is True, "marked: the step under its budget, not done twice"
    assert applied(engine, tx, answer(resumed, Released())) is None
    assert instance(engine, "r2").finished
    assert SagaState.of(finished=True, compensating=True, parked=False) is SagaState.COMPENSATED


def test_an_unanswered_compensation_is_resent_with_its_id_then_parked_and_a_late_answer_moves_it_on() -> None:
    tx, engine, undo = compensating("r3")
    waits = []
    for attempt in range(2, POLICY.attempts + 1):
        resent = overdue(engine, "r3")
        assert resent is not None and resent["id"] == undo["id"], "the same id: the participant may have acted"
        waits.append(instance(engine, "r3").deadline_after)
        assert instance(engine, "r3").attempt == attempt
    assert waits == [STEP_TIMEOUT + 2.0, STEP_TIMEOUT + 4.0], "each wait a step timeout plus the backoff"
    assert overdue(engine, "r3") is None
    parked = instance(engine, "r3")
    assert parked.parked_reason == "release unanswered after 3 attempt(s)" and parked.awaiting == undo["id"]
    # The participant comes back and answers the command the saga last sent: it goes on by itself.
    assert applied(engine, tx, answer(undo, Released())) is None
    assert instance(engine, "r3").finished and instance(engine, "r3").parked_reason is None


def test_resume_refuses_a_saga_that_is_not_parked_or_whose_data_still_does_not_decode() -> None:
    tx, engine, _ = compensating("r4")
    with pytest.raises(NotParked) as refused:
        engine.resume(tx, "r4", by="operator")
    assert refused.value.state == "COMPENSATING"
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    store.instances["r4"] = dataclasses.replace(store.instances["r4"], parked_reason="x", data={"n": "many"})
    before = store.instances["r4"]
    with pytest.raises(InvalidMessage):
        engine.resume(tx, "r4", by="operator")
    assert store.instances["r4"] == before


def sweep_failed(engine: SagaEngine[Data], saga_id: str, reason: str) -> bool:
    """The sweep's failure counted, the saga being overdue."""
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    store.past_deadline.add(saga_id)
    try:
        return engine.sweep_failed(Journal(), saga_id, reason)
    finally:
        store.past_deadline.discard(saga_id)


def test_the_sweep_counts_its_failures_on_a_saga_backs_off_and_parks_it() -> None:
    tx, engine, undo = compensating("r5")
    assert engine.sweep_failed(tx, "r5", "not overdue") is False, "a saga not overdue is not counted"
    assert instance(engine, "r5").attempt == 1
    assert [sweep_failed(engine, "r5", "InvalidMessage: boom") for _ in range(2)] == [False, True]
    parked = instance(engine, "r5")
    assert parked.parked_reason == "the sweep failed on it, attempt 3 of 3: InvalidMessage: boom"
    assert parked.awaiting == undo["id"], "resume sends the awaited command again"
    assert events(engine, "r5")[-3:] == [Event.SWEEP_FAILED, Event.SWEEP_FAILED, Event.PARKED]
    assert sweep_failed(engine, "r5", "again") is False, "parked: nothing more to count"
    assert engine.resume(tx, "r5", by="operator")["id"] == undo["id"]


def test_after_the_pivot_a_failed_or_silent_step_is_retried_never_compensated() -> None:
    tx, engine = engine_for()
    held = engine.start(tx, "r6", Data())
    assert held is not None
    committed = applied(engine, tx, answer(held, Done()))
    assert committed is not None
    shipped = applied(engine, tx, answer(committed, Done()))  # the pivot succeeded
    assert shipped is not None and shipped.get_data() == {"what": "ship"}
    assert applied(engine, tx, answer(shipped, Refused())) is None
    assert events(engine, "r6")[-1] == Event.RETRY_SCHEDULED and not instance(engine, "r6").compensating
    again = overdue(engine, "r6")
    assert again is not None and again.get_data() == {"what": "ship"} and again["id"] != shipped["id"]
    resent = overdue(engine, "r6")  # unanswered: the same command again, not a timeout
    assert resent is not None and resent["id"] == again["id"]
    assert Event.TIMED_OUT not in events(engine, "r6")
    assert applied(engine, tx, answer(resent, Done())) is None
    done = instance(engine, "r6")
    assert done.finished and not done.compensating and tx == ["begin"]


def test_a_pivot_that_fails_compensates_the_steps_before_it() -> None:
    tx, engine, undo = compensating("r7")  # commit, the pivot, was refused
    assert instance(engine, "r7").step == 1, "hold, before the pivot, is undone"
    assert applied(engine, tx, answer(undo, Released())) is None
    assert tx == ["begin", "undo begin"] and instance(engine, "r7").finished


def test_a_reply_handler_rejecting_after_the_pivot_parks_the_saga() -> None:
    """The participant acted: retrying would act twice, and after the pivot nothing is undone."""
    rejecting = (
        step().invoke_participant(commit).pivot()
        .step().invoke_participant(ship).on_reply(Done, refuse_on_done)
        .build(name="Rejecting", data_type=Data, retry=POLICY)
    )
    tx, engine = Journal(), SagaEngine(rejecting, InMemorySagaStore())
    first = engine.start(tx, "r8", Data())
    assert first is not None
    shipped = applied(engine, tx, answer(first, Done()))
    assert shipped is not None
    assert applied(engine, tx, answer(shipped, Done())) is None
    store = engine.store
    assert isinstance(store, InMemorySagaStore)
    assert store.history["r8"][-1].event == Event.PARKED and store.instances["r8"].data == {"n": 1}
    assert "which the saga rejects after its pivot" in (store.instances["r8"].parked_reason or "")


def test_a_definition_is_refused_when_a_step_after_the_pivot_could_be_compensated() -> None:
    with pytest.raises(DefinitionError, match="after the pivot, so it is never compensated"):
        step().invoke_participant(commit).pivot().step().invoke_participant(ship).with_compensation(release).build(
            name="Bad", data_type=Data)
    with pytest.raises(DefinitionError, match="a timeout retries it"):
        step().invoke_participant(commit).pivot().step().invoke_participant(ship).on_timeout(lambda d: d).build(
            name="Bad", data_type=Data)
    with pytest.raises(DefinitionError, match="already has a pivot"):
        step().invoke_participant(commit).pivot().step().invoke_participant(ship).pivot()


def test_the_order_saga_pivots_on_its_credit_reservation() -> None:
    from functions.order.create_order_saga import create_order_saga

    assert create_order_saga.pivot is not None
    assert create_order_saga.steps[create_order_saga.pivot].name == "reserve_credit"
    assert [s.name for s in create_order_saga.steps if create_order_saga.retriable(create_order_saga.steps.index(s))] \
        == ["approve"]

"""The orchestrator: each call moves one saga instance by one transition, inside the caller's
transaction, and returns the one command to send next (or None).

A transition runs local steps inline, stops at the next participant step (its command is the
result) and records every move in the append-only history. Command ids are derived from
(saga id, step, direction), so re-running a transition after a rollback yields identical events.
A reply is applied only if it answers the command the saga is waiting for, at its step, from that
command's handler and as one of its replies; anything else (duplicate, stale, late, misrouted,
from a buggy participant) is recorded as ignored, with the reason. The source is what the sender
writes: who may write to the broker at all is the mesh's authorization, not this check. Handling a
reply is two steps, so the saga's read travels with the inbox's in one round trip: `handle_reply`
queues it, the decision it returns acts.

Every awaited command has a deadline (`step_timeout` after it is sent). `expire` is what the stuck-saga
sweep calls on an overdue saga: a forward step times out and the saga compensates, this step included
(the participant may have acted, its reply late); an overdue compensation is sent again with the same
id, so a lost or dead-lettered one cannot strand the saga: a participant that already acted on it
answers again from its inbox, and whichever answer arrives first is taken.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from cloudevents.http import CloudEvent

from saga.dsl import LocalStep, ParticipantStep, SagaDefinition, StepFailed
from saga.errors import InvalidMessage, UnknownSaga
from saga.messages import (
    CAUSATION_ID,
    REPLY_KIND,
    REPLY_OUTCOME,
    REPLY_TYPE,
    SAGA_ID,
    SAGA_STEP,
    SAGA_TYPE,
    Outcome,
    command_event,
    from_data,
    require_extension,
    stable_id,
    to_data,
)

D = TypeVar("D")


class Event(enum.StrEnum):
    """What a history entry records."""

    STARTED = "STARTED"
    LOCAL_DONE = "LOCAL_DONE"
    COMMAND_SENT = "COMMAND_SENT"
    REPLY_RECEIVED = "REPLY_RECEIVED"
    REPLY_IGNORED = "REPLY_IGNORED"
    TIMED_OUT = "TIMED_OUT"
    COMPENSATING = "COMPENSATING"
    COMPENSATION_SENT = "COMPENSATION_SENT"
    COMPENSATION_DONE = "COMPENSATION_DONE"
    FINISHED = "FINISHED"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SagaInstance:
    saga_type: str
    saga_id: str
    step: int  # index of the step being executed (or awaited); len(steps) once finished forward
    compensating: bool
    finished: bool
    data: dict[str, Any]  # the saga data as JSON
    awaiting: str | None  # id of the command whose reply the saga waits for
    version: int
    # Seconds from this write until the awaited reply is overdue (None: nothing awaited); the store
    # turns it into a deadline on its own clock.
    deadline_after: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    step: int
    name: str
    event: Event
    detail: dict[str, Any]


class SagaStore(Protocol):
    """Persistence of instances and history; `saga.store.PostgresSagaStore` is the real one."""

    def insert(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None: ...

    def lock(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        """Queue the read of the instance under its row lock; the result reads it."""
        ...

    def lock_overdue(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        """`lock`, but only if the saga is unfinished and past its deadline; else it reads None."""
        ...

    def update(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        """Write `instance` (its version already incremented); the caller holds its lock."""
        ...

    def append(self, tx: Any, saga_id: str, history: Sequence[HistoryEntry]) -> None: ...


class _Run(Generic[D]):
    """The mutable working state of one transition."""

    def __init__(self, instance: SagaInstance, data: D, step_timeout: float) -> None:
        self.instance = instance
        self.step_timeout = step_timeout
        self.data = data
        self.step = instance.step
        self.compensating = instance.compensating
        self.finished = instance.finished
        self.awaiting = instance.awaiting
        self.history: list[HistoryEntry] = []

    def record(self, step: int, name: str, event: Event, **detail: Any) -> None:
        self.history.append(HistoryEntry(step=step, name=name, event=event, detail=detail))

    def result(self) -> SagaInstance:
        return dataclasses.replace(
            self.instance,
            step=self.step,
            compensating=self.compensating,
            finished=self.finished,
            awaiting=self.awaiting,
            data=to_data(self.data),
            version=self.instance.version + 1,
            deadline_after=self.step_timeout if self.awaiting is not None else None,
        )


DEFAULT_STEP_TIMEOUT = 60.0


class SagaEngine(Generic[D]):
    def __init__(self, definition: SagaDefinition[D], store: SagaStore, *,
                 step_timeout: float = DEFAULT_STEP_TIMEOUT) -> None:
        if step_timeout <= 0:
            raise ValueError("step_timeout must be positive")
        self.definition = definition
        self.store = store
        self.step_timeout = step_timeout
        self.source = f"/sagas/{definition.name}"

    def start(self, tx: Any, saga_id: str, data: D) -> CloudEvent | None:
        """Create the instance and run it up to its first participant step."""
        instance = SagaInstance(
            saga_type=self.definition.name,
            saga_id=saga_id,
            step=0,
            compensating=False,
            finished=False,
            data=to_data(data),
            awaiting=None,
            version=0,
        )
        run = _Run(instance, data, self.step_timeout)
        run.record(0, self.definition.name, Event.STARTED)
        command = self._forward(tx, run, 0)
        self.store.insert(tx, run.result(), run.history)
        return command

    def handle_reply(self, tx: Any, event: CloudEvent) -> Callable[[], CloudEvent | None]:
        """Queue the read of the saga a participant's reply is for, and return the decision that
        applies the reply and returns the next command, if any (`saga.inbox.handle_once` calls it
        once it knows the reply is new)."""
        if event["type"] != REPLY_TYPE or event.get(SAGA_TYPE) != self.definition.name:
            raise InvalidMessage(f"{self.definition.name} cannot handle {event['type']} / {event.get(SAGA_TYPE)}")
        saga_id = require_extension(event, SAGA_ID)
        answers = require_extension(event, CAUSATION_ID)
        kind = require_extension(event, REPLY_KIND)
        try:
            outcome = Outcome(require_extension(event, REPLY_OUTCOME))
        except ValueError as exc:
            raise InvalidMessage(f"reply {event['id']} has an unknown outcome") from exc
        locked = self.store.lock(tx, self.definition.name, saga_id)
        return lambda: self._apply_reply(tx, event, locked(), saga_id, answers, kind, outcome)

    def _apply_reply(self, tx: Any, event: CloudEvent, instance: SagaInstance | None, saga_id: str, answers: str,
                     kind: str, outcome: Outcome) -> CloudEvent | None:
        if instance is None:
            raise UnknownSaga(f"no {self.definition.name} instance {saga_id}")
        refused = self._refusal(instance, event, answers, kind, outcome)
        if refused is not None:
            self.store.append(
                tx,
                saga_id,
                [HistoryEntry(step=instance.step, name=kind, event=Event.REPLY_IGNORED,
                              detail={"replyId": event["id"], "answers": answers, "reason": refused})],
            )
            return None

        run = _Run(instance, from_data(self.definition.data_type, instance.data), self.step_timeout)
        current = self.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        run.record(instance.step, kind, Event.REPLY_RECEIVED, outcome=str(outcome), replyId=event["id"])
        run.awaiting = None
        if run.compensating:
            run.record(instance.step, current.compensation_name or current.name, Event.COMPENSATION_DONE)
            command = self._compensate(tx, run, instance.step - 1)
        else:
            command = self._on_forward_reply(tx, run, current, kind, outcome, event.get_data())
        self.store.update(tx, run.result(), run.history)
        return command

    def expire(self, tx: Any, saga_id: str) -> CloudEvent | None:
        """Act on a saga whose awaited reply is overdue; None if it is not (any more)."""
        instance = self.store.lock_overdue(tx, self.definition.name, saga_id)()
        if instance is None or instance.finished or instance.awaiting is None:
            return None
        run = _Run(instance, from_data(self.definition.data_type, instance.data), self.step_timeout)
        current = self.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        command: CloudEvent | None
        if run.compensating:
            assert current.compensation is not None
            name = current.compensation_name or current.name
            command = self._send(run, instance.step, name, current.compensation(run.data), Event.COMPENSATION_SENT,
                                 "compensate", resent=True)
        else:
            run.record(instance.step, current.name, Event.TIMED_OUT, commandId=instance.awaiting)
            run.awaiting = None
            if current.on_timeout is not None:
                run.data = current.on_timeout(run.data)
            command = self._compensate(tx, run, instance.step)
        self.store.update(tx, run.result(), run.history)
        return command

    def _refusal(self, instance: SagaInstance, event: CloudEvent, answers: str, kind: str,
                 outcome: Outcome) -> str | None:
        """Why the reply is not the one the saga awaits, or None if it is: it must answer the awaited
        command, at the saga's step, come from that command's handler and be one of its replies."""
        if instance.finished:
            return "the saga has finished"
        if instance.awaiting != answers:
            return "it answers no command the saga awaits"
        if event.get(SAGA_STEP) != str(instance.step):
            return f"it is for step {event.get(SAGA_STEP)}, the saga awaits step {instance.step}"
        current = self.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        command = current.compensation_type if instance.compensating else current.command_type
        assert command is not None, "a saga awaits a compensation only of a step that has one"
        if event["source"] != command.HANDLER:
            return f"its source {event['source']} is not {command.HANDLER}, which handles {command.__name__}"
        replies = {reply.__name__: reply for reply in command.REPLIES}
        if kind not in replies:
            return f"{kind} is not a reply to {command.__name__}"
        if outcome is not replies[kind].OUTCOME:
            return f"its outcome {outcome} contradicts {kind}"
        return None

    def _on_forward_reply(
        self, tx: Any, run: _Run[D], current: ParticipantStep[D], kind: str, outcome: Outcome, data: Any
    ) -> CloudEvent | None:
        handler = current.reply_handlers.get(kind)
        if handler is not None:
            reply_type, handle = handler
            result = handle(run.data, from_data(reply_type, data))
            if isinstance(result, StepFailed):
                # The participant acted (e.g. reserved goods) but the saga rejects: undo this step too.
                run.data = result.data
                return self._compensate(tx, run, run.step)
            run.data = result
        if outcome is Outcome.FAILURE:
            # The participant did not act: compensate the steps before it.
            return self._compensate(tx, run, run.step - 1)
        return self._forward(tx, run, run.step + 1)

    def _forward(self, tx: Any, run: _Run[D], first: int) -> CloudEvent | None:
        steps = self.definition.steps
        for index in range(first, len(steps)):
            step = steps[index]
            run.step = index
            if isinstance(step, LocalStep):
                run.data = _apply(step.invoke, tx, run.data)
                run.record(index, step.name, Event.LOCAL_DONE)
                continue
            return self._send(run, index, step.name, step.command(run.data), Event.COMMAND_SENT, "invoke")
        run.step = len(steps)
        run.finished = True
        run.record(run.step, self.definition.name, Event.FINISHED, outcome="COMPLETED")
        return None

    def _compensate(self, tx: Any, run: _Run[D], first: int) -> CloudEvent | None:
        if not run.compensating:
            run.compensating = True
            run.record(run.step, self.definition.name, Event.COMPENSATING)
        for index in range(first, -1, -1):
            step = self.definition.steps[index]
            run.step = index
            if step.compensation is None:
                continue
            name = step.compensation_name or step.name
            if isinstance(step, LocalStep):
                run.data = _apply(step.compensation, tx, run.data)
                run.record(index, name, Event.COMPENSATION_DONE)
                continue
            return self._send(run, index, name, step.compensation(run.data), Event.COMPENSATION_SENT, "compensate")
        run.finished = True
        run.record(run.step, self.definition.name, Event.FINISHED, outcome="COMPENSATED")
        return None

    def _send(self, run: _Run[D], index: int, name: str, command: Any, event: Event, direction: str,
              *, resent: bool = False) -> CloudEvent:
        saga_id = run.instance.saga_id
        command_id = stable_id(saga_id, index, direction)
        run.awaiting = command_id
        detail: dict[str, Any] = {"commandId": command_id, "commandType": command.TYPE}
        if resent:
            detail["resent"] = True
        run.record(index, name, event, **detail)
        return command_event(
            command, event_id=command_id, source=self.source, saga_type=self.definition.name,
            saga_id=saga_id, step=index,
        )


def _apply(action: Any, tx: Any, data: D) -> D:
    result = action(tx, data)
    return data if result is None else result


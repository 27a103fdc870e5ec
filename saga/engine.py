"""The orchestrator: each call moves one saga instance by one transition, inside the caller's
transaction, and returns the one command to send next (or None).

A transition runs local steps inline, stops at the next participant step (its command is the
result) and records every move in the append-only history. Command ids are derived from
(saga type, saga id, step, direction), so re-running a transition after a rollback yields identical events.
A reply is applied only if it answers the command the saga is waiting for, at its step, from that
command's handler and as one of its replies; anything else (duplicate, stale, late, misrouted,
from a buggy participant) is recorded as ignored, with the reason. The source is what the sender
writes: who may write to the broker at all is the mesh's authorization, not this check. Handling a
reply is two steps, so the saga's read travels with the inbox's in one round trip: `handle_reply`
queues it, the decision it returns acts.

Every awaited command has a deadline (`step_timeout` after it is sent). `expire` is what the stuck-saga
sweep calls on an overdue saga: a forward step before the pivot times out and the saga compensates, this
step included (the participant may have acted, its reply late). A compensation, or a step after the
pivot, is never given up on: unanswered, it is sent again with the same id (a participant that already
acted answers again from its inbox; whichever answer arrives first is taken); answered with FAILURE, it
is sent again after a backoff under a new id (the participant's inbox would answer the old one with the
same FAILURE). Both count against the definition's `RetryPolicy`; past it the saga is PARKED: nothing is
sent, the deadline is cleared, and it waits for `resume` (a person who fixed the cause). A late answer to
the command a parked saga last sent still moves it on.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from cloudevents.http import CloudEvent

from saga.dsl import DefinitionError, LocalStep, ParticipantStep, RetryPolicy, SagaDefinition, StepFailed
from saga.errors import InvalidMessage, NotParked, UnknownDefinition, UnknownSaga
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
    RETRY_SCHEDULED = "RETRY_SCHEDULED"  # a compensation or retriable step failed; sent again after a backoff
    PARKED = "PARKED"  # out of retries: waits for a person
    RESUMED = "RESUMED"
    SWEEP_FAILED = "SWEEP_FAILED"  # the sweep could not act on the saga (its data, a handler): counted
    FINISHED = "FINISHED"


class SagaState(enum.StrEnum):
    """What an operator sees (`GET /admin/sagas`), derived from the instance's flags."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    PARKED = "PARKED"
    COMPLETED = "COMPLETED"
    COMPENSATED = "COMPENSATED"

    @classmethod
    def of(cls, *, finished: bool, compensating: bool, parked: bool) -> SagaState:
        if parked:
            return cls.PARKED
        if finished:
            return cls.COMPENSATED if compensating else cls.COMPLETED
        return cls.COMPENSATING if compensating else cls.RUNNING


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
    # Sends of the current step's command (or compensation) so far, the first included.
    attempt: int = 0
    parked_reason: str | None = None  # set while PARKED: why it waits for a person
    definition_version: int = 1  # the definition it started on, and runs on to its end
    step_name: str | None = None  # the current step's name (None once finished forward): checked on load
    # Seconds from this write until the awaited reply is overdue, or a retry is due (None: nothing
    # awaited); the store turns it into a deadline on its own clock.
    deadline_after: float | None = None
    # Read only by `lock_overdue`: seconds the saga was past its deadline when the sweep took it.
    overdue_by: float | None = None
    # Read with the instance, never written: seconds since its last write (a reply's wait) and since its start.
    waited: float | None = None
    age: float | None = None


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

    def append(self, tx: Any, saga_type: str, saga_id: str, history: Sequence[HistoryEntry]) -> None: ...


class _Run(Generic[D]):
    """The mutable working state of one transition."""

    def __init__(self, instance: SagaInstance, definition: SagaDefinition[D], data: D, step_timeout: float) -> None:
        self.instance = instance
        self.definition = definition
        self.step_timeout = step_timeout
        self.data = data
        self.step = instance.step
        self.compensating = instance.compensating
        self.finished = instance.finished
        self.awaiting = instance.awaiting
        self.attempt = instance.attempt
        self.parked_reason = instance.parked_reason
        self.deadline_after: float | None = None  # set by whatever leaves the saga waiting
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
            attempt=self.attempt,
            parked_reason=self.parked_reason,
            definition_version=self.definition.version,
            step_name=self.definition.steps[self.step].name if self.step < len(self.definition.steps) else None,
            data=to_data(self.data),
            version=self.instance.version + 1,
            deadline_after=None if self.finished or self.parked_reason is not None else self.deadline_after,
            overdue_by=None,
        )


DEFAULT_STEP_TIMEOUT = 60.0


class SagaEngine(Generic[D]):
    def __init__(self, definition: SagaDefinition[D], store: SagaStore, *,
                 older: Sequence[SagaDefinition[Any]] = (), start_on: int | None = None,
                 step_timeout: float = DEFAULT_STEP_TIMEOUT, retry: RetryPolicy | None = None) -> None:
        """New sagas start on `definition`, the newest; those started on an `older` version of it run on that
        one to their end, so keep a version here while it has sagas in flight (`saga versions`).
        `start_on` holds new sagas on an older version: the first half of a two-phase rollout, in which
        every replica learns the new version before any saga starts on it (an old replica cannot drive
        one). `retry` replaces the definitions' policy for this deployment (a test stack's short budget)."""
        if step_timeout <= 0:
            raise ValueError("step_timeout must be positive")
        self.definition = definition
        self.definitions: dict[int, SagaDefinition[Any]] = {}
        for version in (*older, definition):
            if version.name != definition.name or version.version in self.definitions:
                raise DefinitionError(f"{version.name} v{version.version}: not another version of "
                                      f"{definition.name} (or a version given twice)")
            self.definitions[version.version] = version
        if max(self.definitions) != definition.version:
            raise DefinitionError(f"{definition.name}: `definition` must be the newest version")
        if start_on is not None and start_on not in self.definitions:
            raise DefinitionError(f"{definition.name}: cannot start on v{start_on}, it has {sorted(self.definitions)}")
        self.starts_on: SagaDefinition[D] = self.definitions[start_on or definition.version]
        self.retry_override = retry
        self.store = store
        self.step_timeout = step_timeout
        self.source = f"/sagas/{definition.name}"

    def start(self, tx: Any, saga_id: str, data: D) -> CloudEvent | None:
        """Create the instance and run it up to its first participant step."""
        instance = SagaInstance(
            saga_type=self.starts_on.name,
            saga_id=saga_id,
            step=0,
            compensating=False,
            finished=False,
            data=to_data(data),
            awaiting=None,
            version=0,
            definition_version=self.starts_on.version,
        )
        run = _Run(instance, self.starts_on, data, self.step_timeout)
        run.record(0, self.starts_on.name, Event.STARTED, definitionVersion=self.starts_on.version)
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
            code, reason = refused
            self.store.append(
                tx,
                instance.saga_type,
                saga_id,
                [HistoryEntry(step=instance.step, name=kind, event=Event.REPLY_IGNORED,
                              detail={"replyId": event["id"], "answers": answers, "reason": reason, "code": code})],
            )
            return None

        run = self._run(instance)
        current = run.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        # How long the reply was awaited (since the saga's last write: the send, or a resend): the step's latency.
        waited = {} if instance.waited is None else {"waited": round(instance.waited, 4)}
        run.record(instance.step, kind, Event.REPLY_RECEIVED, outcome=str(outcome), replyId=event["id"],
                   stepName=self._name(run, current), direction="compensate" if run.compensating else "invoke",
                   **waited)
        run.awaiting = None
        run.parked_reason = None  # the answer a parked saga waited for came after all: it goes on
        if run.compensating:
            name = current.compensation_name or current.name
            if outcome is Outcome.FAILURE:
                command = self._retry_later(run, name, f"{name} answered {kind}")
            else:
                run.record(instance.step, name, Event.COMPENSATION_DONE)
                command = self._compensate(tx, run, instance.step - 1)
        else:
            command = self._on_forward_reply(tx, run, current, kind, outcome, event.get_data())
        self.store.update(tx, run.result(), run.history)
        return command

    def expire(self, tx: Any, saga_id: str) -> CloudEvent | None:
        """Act on a saga past its deadline: its awaited reply is overdue, or a retry is due. None if it
        is not (any more) overdue."""
        instance = self.store.lock_overdue(tx, self.definition.name, saga_id)()
        if instance is None or instance.finished or instance.parked_reason is not None:
            return None
        run = self._run(instance)
        current = run.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        # How late the sweep came: what shows that a poisoned saga holds up no other.
        late: dict[str, Any] = {} if instance.overdue_by is None else {"overdueBy": round(instance.overdue_by, 3)}
        command: CloudEvent | None
        if instance.awaiting is None and run.attempt >= self._policy(run.definition).attempts:  # budget shrank
            command = self._park(run, self._name(run, current), f"out of retries ({run.attempt} attempt(s))", **late)
        elif instance.awaiting is None:  # a retry after a FAILURE is due: a new id, or the inbox answers it again
            command = self._send_again(run, current, self._retry_id(instance), attempt=run.attempt + 1, **late)
        elif run.compensating or run.definition.retriable(instance.step):
            policy, name = self._policy(run.definition), self._name(run, current)
            if run.attempt >= policy.attempts:
                # The awaited id stays: a late answer to it still moves the saga on.
                command = self._park(run, name, f"{name} unanswered after {run.attempt} attempt(s)", **late)
            else:
                command = self._send_again(run, current, instance.awaiting, attempt=run.attempt + 1, resent=True,
                                           extra_wait=policy.delay(run.attempt), **late)
        else:
            run.record(instance.step, current.name, Event.TIMED_OUT, commandId=instance.awaiting, **late)
            run.awaiting = None
            if current.on_timeout is not None:
                run.data = current.on_timeout(run.data)
            command = self._compensate(tx, run, instance.step)
        self.store.update(tx, run.result(), run.history)
        return command

    def resume(self, tx: Any, saga_id: str, *, by: str) -> CloudEvent:
        """Take a PARKED saga up again (a person fixed the cause): its step is sent again with a fresh
        budget, under the id it awaits if any (a participant that acted answers from its inbox), else a
        new one. Raises UnknownSaga, NotParked, or InvalidMessage when its data still does not decode."""
        instance = self.store.lock(tx, self.definition.name, saga_id)()
        if instance is None:
            raise UnknownSaga(f"no {self.definition.name} instance {saga_id}")
        if instance.parked_reason is None:
            raise NotParked(f"saga {saga_id} is not parked", state=SagaState.of(
                finished=instance.finished, compensating=instance.compensating, parked=False))
        run = self._run(instance)
        current = run.definition.steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga parks only on participant steps"
        run.parked_reason = None
        run.record(instance.step, self._name(run, current), Event.RESUMED, by=by, parkedFor=instance.parked_reason)
        command_id = instance.awaiting or self._retry_id(instance)
        command = self._send_again(run, current, command_id, attempt=1, resent=instance.awaiting is not None,
                                   resumed=True)
        self.store.update(tx, run.result(), run.history)
        return command

    def sweep_failed(self, tx: Any, saga_id: str, reason: str) -> bool:
        """Count a failed attempt of the sweep on a saga (its data no longer decodes, a handler raises)
        without decoding anything: the saga is tried again after a backoff, PARKED past the budget,
        and the sweep goes on with the others meanwhile. Returns whether it parked. Only a saga still
        overdue is counted: one a reply moved on meanwhile, or another sweep counted already, is not."""
        instance = self.store.lock_overdue(tx, self.definition.name, saga_id)()
        if instance is None or instance.finished or instance.parked_reason is not None:
            return False
        known = self.definitions.get(instance.definition_version, self.definition)  # never decoded here
        policy, attempt = self._policy(known), instance.attempt + 1
        name = instance.step_name or "?"
        history = [HistoryEntry(step=instance.step, name=name, event=Event.SWEEP_FAILED,
                                detail={"reason": reason, "attempt": attempt})]
        parked = None
        if attempt >= policy.attempts:
            parked = f"the sweep failed on it, attempt {attempt} of {policy.attempts}: {reason}"
            history.append(HistoryEntry(step=instance.step, name=name, event=Event.PARKED,
                                        detail={"reason": parked, "attempts": attempt}))
        self.store.update(tx, dataclasses.replace(
            instance, attempt=attempt, version=instance.version + 1, parked_reason=parked,
            deadline_after=None if parked else policy.delay(attempt), overdue_by=None), history)
        return parked is not None

    def _refusal(self, instance: SagaInstance, event: CloudEvent, answers: str, kind: str,
                 outcome: Outcome) -> tuple[str, str] | None:
        """Why the reply is not the one the saga awaits (a code for the metrics, the words for a person), or
        None if it is: it must answer the awaited command, at the saga's step, come from that command's
        handler and be one of its replies."""
        if instance.finished:
            return "finished", "the saga has finished"
        if instance.awaiting != answers:
            return "not_awaited", "it answers no command the saga awaits"
        if event.get(SAGA_STEP) != str(instance.step):
            return "wrong_step", f"it is for step {event.get(SAGA_STEP)}, the saga awaits step {instance.step}"
        current = self._definition_of(instance).steps[instance.step]
        assert isinstance(current, ParticipantStep), "a saga only waits on participant steps"
        command = current.compensation_type if instance.compensating else current.command_type
        assert command is not None, "a saga awaits a compensation only of a step that has one"
        if event["source"] != command.HANDLER:
            return "wrong_source", (f"its source {event['source']} is not {command.HANDLER}, which handles "
                                    f"{command.__name__}")
        replies = {reply.__name__: reply for reply in command.REPLIES}
        if kind not in replies:
            return "unknown_reply", f"{kind} is not a reply to {command.__name__}"
        if outcome is not replies[kind].OUTCOME:
            return "contradictory_outcome", f"its outcome {outcome} contradicts {kind}"
        return None

    def _on_forward_reply(
        self, tx: Any, run: _Run[D], current: ParticipantStep[D], kind: str, outcome: Outcome, data: Any
    ) -> CloudEvent | None:
        handler = current.reply_handlers.get(kind)
        rejected = False  # the participant acted, but the saga does not accept the result
        if handler is not None:
            reply_type, handle = handler
            result = handle(run.data, from_data(reply_type, data))
            rejected = isinstance(result, StepFailed)
            run.data = result.data if isinstance(result, StepFailed) else result
        if run.definition.retriable(run.step):
            # After the pivot the saga only goes forward: a failed step is tried again. One whose participant
            # acted but whose result the saga rejects cannot be retried (it would act twice) nor undone.
            if rejected:
                return self._park(run, current.name, f"{current.name} answered {kind}, which the saga rejects after "
                                                     "its pivot: a person decides")
            if outcome is Outcome.FAILURE:
                return self._retry_later(run, current.name, f"{current.name} answered {kind}")
            return self._forward(tx, run, run.step + 1)
        if rejected:
            # The participant acted (e.g. reserved goods) but the saga rejects: undo this step too.
            return self._compensate(tx, run, run.step)
        if outcome is Outcome.FAILURE:
            # The participant did not act: compensate the steps before it.
            return self._compensate(tx, run, run.step - 1)
        return self._forward(tx, run, run.step + 1)

    def _forward(self, tx: Any, run: _Run[D], first: int) -> CloudEvent | None:
        steps = run.definition.steps
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
        run.record(run.step, run.definition.name, Event.FINISHED, outcome="COMPLETED",
                   definitionVersion=run.definition.version, **_took(run))
        return None

    def _compensate(self, tx: Any, run: _Run[D], first: int) -> CloudEvent | None:
        if not run.compensating:
            run.compensating = True
            run.record(run.step, run.definition.name, Event.COMPENSATING)
        for index in range(first, -1, -1):
            step = run.definition.steps[index]
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
        run.record(run.step, run.definition.name, Event.FINISHED, outcome="COMPENSATED",
                   definitionVersion=run.definition.version, **_took(run))
        return None

    def _retry_later(self, run: _Run[D], name: str, reason: str) -> CloudEvent | None:
        """A compensation or retriable step failed: send it again after a backoff, or park past the budget."""
        policy = self._policy(run.definition)
        if run.attempt >= policy.attempts:
            return self._park(run, name, f"{reason}, {run.attempt} attempt(s) of {policy.attempts}")
        run.awaiting = None
        run.deadline_after = policy.delay(run.attempt)
        run.record(run.step, name, Event.RETRY_SCHEDULED, attempt=run.attempt, inSeconds=run.deadline_after,
                   reason=reason)
        return None

    @staticmethod
    def _park(run: _Run[D], name: str, reason: str, **detail: Any) -> CloudEvent | None:
        """Nothing is sent: the saga waits for `resume`."""
        run.parked_reason = reason
        run.record(run.step, name, Event.PARKED, reason=reason, attempts=run.attempt, **detail)
        return None

    def _run(self, instance: SagaInstance) -> _Run[Any]:
        definition = self._definition_of(instance)
        return _Run(instance, definition, from_data(definition.data_type, instance.data), self.step_timeout)

    def _definition_of(self, instance: SagaInstance) -> SagaDefinition[Any]:
        """The version the saga started on; it must be in this build, and agree on the step's name."""
        definition = self.definitions.get(instance.definition_version)
        if definition is None:
            raise UnknownDefinition(f"{self.definition.name} v{instance.definition_version} is not in this build "
                                    f"(it has {sorted(self.definitions)}): keep a version while it has sagas in flight")
        expected = definition.steps[instance.step].name if instance.step < len(definition.steps) else None
        if instance.step_name is not None and instance.step_name != expected:
            raise UnknownDefinition(f"{definition.name} v{definition.version}: step {instance.step} is {expected}, the "
                                    f"saga is at {instance.step_name}: the definition changed without a new version")
        return definition

    def _policy(self, definition: SagaDefinition[Any]) -> RetryPolicy:
        """The budget a saga on `definition` runs with: the deployment's, else its version's own."""
        return self.retry_override or definition.retry

    def _retry_id(self, instance: SagaInstance) -> str:
        """A new id for the step's command, sent again after a FAILURE (the inbox would answer the old id's
        FAILURE again): the instance's version makes it new, and the same on a re-run transition."""
        return stable_id(self.definition.name, instance.saga_id, instance.step, "retry", instance.version)

    @property
    def retry(self) -> RetryPolicy:
        """The budget of the newest definition (each saga runs with its own version's, unless overridden)."""
        return self._policy(self.definition)

    @staticmethod
    def _name(run: _Run[D], step: ParticipantStep[D]) -> str:
        return (step.compensation_name or step.name) if run.compensating else step.name

    def _send_again(self, run: _Run[D], step: ParticipantStep[D], command_id: str, *, attempt: int,
                    resent: bool = False, extra_wait: float = 0.0, **detail: Any) -> CloudEvent:
        """The current step's command (or compensation) once more: a retry, a resend, a resume."""
        if run.compensating:
            assert step.compensation is not None
            return self._send(run, run.step, self._name(run, step), step.compensation(run.data),
                              Event.COMPENSATION_SENT, "compensate", command_id=command_id, attempt=attempt,
                              resent=resent, extra_wait=extra_wait, **detail)
        return self._send(run, run.step, step.name, step.command(run.data), Event.COMMAND_SENT, "invoke",
                          command_id=command_id, attempt=attempt, resent=resent, extra_wait=extra_wait, **detail)

    def _send(self, run: _Run[D], index: int, name: str, command: Any, event: Event, direction: str,
              *, command_id: str | None = None, attempt: int = 1, resent: bool = False, extra_wait: float = 0.0,
              **detail: Any) -> CloudEvent:
        saga_id = run.instance.saga_id
        # The first send of a step has the id (saga type, saga, step, direction): re-running a transition yields
        # it again, and another saga type over the same id (an order's cancel) never collides with it.
        command_id = command_id or stable_id(run.definition.name, saga_id, index, direction)
        run.awaiting = command_id
        run.attempt = attempt
        run.deadline_after = self.step_timeout + extra_wait
        detail = {"commandId": command_id, "commandType": command.TYPE, **detail}
        if attempt > 1:
            detail["attempt"] = attempt
        if resent:
            detail["resent"] = True
        run.record(index, name, event, **detail)
        return command_event(
            command, event_id=command_id, source=self.source, saga_type=run.definition.name,
            saga_id=saga_id, step=index,
        )


def _took(run: _Run[Any]) -> dict[str, float]:
    """How long the saga took, when it did not end in the transaction that started it."""
    return {} if run.instance.age is None else {"took": round(run.instance.age, 4)}


def _apply(action: Any, tx: Any, data: D) -> D:
    result = action(tx, data)
    return data if result is None else result


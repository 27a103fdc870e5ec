"""The saga DSL: a definition reads top to bottom like the original's

    step().invoke_local(create).with_compensation(reject)
    .step().invoke_participant(reserve_goods)
           .on_reply(GoodsStockLimit, handle_goods_limit)
           .with_compensation(release_goods)
    .step().invoke_local(approve)
    .build(name="CreateOrderSaga", data_type=CreateOrderSagaData)

Local actions take (transaction, data) and run inside the orchestrator's transaction. Participant
steps turn data into a Command; `on_reply` handlers take (data, reply) and return the new data, or
`fail(data)` to reject on a successful reply (the step's effect then gets compensated too).
`on_timeout(handler)` takes (data) and returns the data to compensate with when the participant does
not answer before the step deadline; the step itself is compensated too, since the participant may
have acted and its reply be late.

Failure policy (Richardson's taxonomy of saga steps). `.pivot()` marks the go/no-go step: the steps
before it and the pivot itself are compensatable; once the pivot succeeds the saga only goes forward,
so every step after it is retriable and has no compensation (the definition is refused otherwise).
A compensation, or a retriable step, that fails (a FAILURE reply) or goes unanswered past its
deadline is tried again with exponential backoff (`RetryPolicy`, given to `build`); past its budget the
saga is PARKED for a person, who resumes it once the cause is fixed. Without a pivot every step is
compensatable, as in Eventuate Tram.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Callable, Mapping
from typing import Any, Generic, Self, TypeVar

from saga.messages import Command, Reply

D = TypeVar("D")
R = TypeVar("R", bound=Reply)

LocalAction = Callable[[Any, D], "D | None"]
CommandFactory = Callable[[D], Command]
ReplyHandler = Callable[[D, Any], "D | StepFailed[D]"]
TimeoutHandler = Callable[[D], D]


@dataclasses.dataclass(frozen=True)
class StepFailed(Generic[D]):
    """Returned by a reply handler: the participant acted, but the saga must not go on."""

    data: D


def fail(data: D) -> StepFailed[D]:
    return StepFailed(data)


class DefinitionError(ValueError):
    """The definition is malformed; raised when it is built, never at run time."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often, and how far apart, a compensation or a retriable step is tried before the saga is
    PARKED. `attempts` counts every send, the first included; the n-th retry waits
    `first_delay * 2**(n-1)` seconds, at most `max_delay` (an unanswered command is re-sent at its
    deadline and then waits a step timeout plus that delay)."""

    attempts: int = 8
    first_delay: float = 5.0
    max_delay: float = 600.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.first_delay <= 0 or self.max_delay < self.first_delay:
            raise DefinitionError(f"a retry policy needs attempts >= 1 and 0 < first_delay <= max_delay: {self}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt (1-based)."""
        return min(self.first_delay * 2.0 ** (max(failures, 1) - 1), self.max_delay)


@dataclasses.dataclass(frozen=True)
class LocalStep(Generic[D]):
    name: str
    invoke: LocalAction[D]
    compensation: LocalAction[D] | None = None

    @property
    def compensation_name(self) -> str | None:
        return None if self.compensation is None else self.compensation.__name__


@dataclasses.dataclass(frozen=True)
class ParticipantStep(Generic[D]):
    name: str
    command: CommandFactory[D]
    command_type: type[Command]  # what `command` returns: its HANDLER and REPLIES authenticate replies
    # reply class name -> (reply class, handler)
    reply_handlers: Mapping[str, tuple[type[Reply], ReplyHandler[D]]]
    compensation: CommandFactory[D] | None = None
    compensation_type: type[Command] | None = None
    on_timeout: TimeoutHandler[D] | None = None

    @property
    def compensation_name(self) -> str | None:
        return None if self.compensation is None else self.compensation.__name__


Step = LocalStep[D] | ParticipantStep[D]


@dataclasses.dataclass(frozen=True)
class SagaDefinition(Generic[D]):
    name: str
    data_type: type[D]
    steps: tuple[Step[D], ...]
    retry: RetryPolicy = RetryPolicy()
    pivot: int | None = None  # index of the pivot step; None: every step is compensatable
    # Bumped whenever what a saga in flight depends on changes (`fingerprint`); each instance runs on the
    # version it started with.
    version: int = 1

    def retriable(self, index: int) -> bool:
        """A step after the pivot: never compensated, tried again until it succeeds (or the saga parks)."""
        return self.pivot is not None and index > self.pivot


def step() -> StepBuilder[Any]:
    """Begin a saga definition."""
    return StepBuilder([])


class StepBuilder(Generic[D]):
    def __init__(self, steps: list[Step[D]], pivot: int | None = None) -> None:
        self._steps = steps
        self._pivot = pivot

    def invoke_local(self, action: LocalAction[D]) -> LocalStepBuilder[D]:
        return LocalStepBuilder(self._steps, LocalStep(action.__name__, action), self._pivot)

    def invoke_participant(self, command: CommandFactory[D]) -> ParticipantStepBuilder[D]:
        step = ParticipantStep(command.__name__, command, command_type(command), {})
        return ParticipantStepBuilder(self._steps, step, self._pivot)


def command_type(factory: CommandFactory[Any]) -> type[Command]:
    """The Command class a factory returns, from its return annotation; it must say who answers it
    (HANDLER) and with what (REPLIES), which is how the engine knows a reply is the awaited one."""
    try:
        returned = typing.get_type_hints(factory).get("return")
    except NameError as exc:
        raise DefinitionError(f"{factory.__name__}: its return annotation does not resolve ({exc})") from exc
    if not (isinstance(returned, type) and issubclass(returned, Command)):
        raise DefinitionError(f"{factory.__name__} must be annotated to return a Command class, not {returned!r}")
    missing = [name for name in ("TYPE", "HANDLER", "REPLIES") if not hasattr(returned, name)]
    if missing:
        raise DefinitionError(f"{returned.__name__} lacks {', '.join(missing)}")
    return returned


class _StepInProgress(Generic[D]):
    def __init__(self, steps: list[Step[D]], current: Step[D], pivot: int | None = None) -> None:
        self._steps = steps
        self._current = current
        self._pivot = pivot

    def step(self) -> StepBuilder[D]:
        return StepBuilder([*self._steps, self._current], self._pivot)

    def pivot(self) -> Self:
        """Mark this step as the saga's pivot: once it succeeds, the saga only goes forward."""
        if self._pivot is not None:
            raise DefinitionError(f"step {self._current.name}: the saga already has a pivot, "
                                  f"{self._steps[self._pivot].name}")
        return type(self)(self._steps, self._current, len(self._steps))

    def build(self, *, name: str, data_type: type[D], retry: RetryPolicy | None = None,
              version: int = 1) -> SagaDefinition[D]:
        steps = (*self._steps, self._current)
        if not dataclasses.is_dataclass(data_type):
            raise DefinitionError(f"saga data for {name} must be a dataclass, not {data_type!r}")
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise DefinitionError(f"{name}: step names must be unique, got {names}")
        if self._pivot is not None:
            for after in steps[self._pivot + 1:]:
                if after.compensation is not None:
                    raise DefinitionError(f"{name}: step {after.name} comes after the pivot, so it is never "
                                          "compensated; it cannot have a compensation")
                if isinstance(after, ParticipantStep) and after.on_timeout is not None:
                    raise DefinitionError(f"{name}: step {after.name} comes after the pivot: a timeout retries "
                                          "it, there is nothing to compensate with on_timeout")
        if version < 1:
            raise DefinitionError(f"{name}: versions start at 1")
        return SagaDefinition(name=name, data_type=data_type, steps=steps, retry=retry or RetryPolicy(),
                              pivot=self._pivot, version=version)


class LocalStepBuilder(_StepInProgress[D]):
    def with_compensation(self, action: LocalAction[D]) -> LocalStepBuilder[D]:
        assert isinstance(self._current, LocalStep)
        if self._current.compensation is not None:
            raise DefinitionError(f"step {self._current.name} already has a compensation")
        return LocalStepBuilder(self._steps, dataclasses.replace(self._current, compensation=action), self._pivot)


class ParticipantStepBuilder(_StepInProgress[D]):
    def on_reply(self, reply_type: type[R], handler: Callable[[D, R], D | StepFailed[D]]) -> ParticipantStepBuilder[D]:
        assert isinstance(self._current, ParticipantStep)
        if not (isinstance(reply_type, type) and issubclass(reply_type, Reply)):
            raise DefinitionError(f"on_reply takes a Reply class, got {reply_type!r}")
        if reply_type.__name__ in self._current.reply_handlers:
            raise DefinitionError(f"step {self._current.name} already handles {reply_type.__name__}")
        if reply_type not in self._current.command_type.REPLIES:
            raise DefinitionError(f"step {self._current.name}: {reply_type.__name__} is not a reply to "
                                  f"{self._current.command_type.__name__} (its REPLIES)")
        handlers: dict[str, tuple[type[Reply], ReplyHandler[D]]] = {
            **self._current.reply_handlers, reply_type.__name__: (reply_type, handler)
        }
        return ParticipantStepBuilder(self._steps, dataclasses.replace(self._current, reply_handlers=handlers),
                                      self._pivot)

    def on_timeout(self, handler: TimeoutHandler[D]) -> ParticipantStepBuilder[D]:
        assert isinstance(self._current, ParticipantStep)
        if self._current.on_timeout is not None:
            raise DefinitionError(f"step {self._current.name} already has a timeout handler")
        return ParticipantStepBuilder(self._steps, dataclasses.replace(self._current, on_timeout=handler),
                                      self._pivot)

    def with_compensation(self, command: CommandFactory[D]) -> ParticipantStepBuilder[D]:
        assert isinstance(self._current, ParticipantStep)
        if self._current.compensation is not None:
            raise DefinitionError(f"step {self._current.name} already has a compensation")
        return ParticipantStepBuilder(self._steps, dataclasses.replace(
            self._current, compensation=command, compensation_type=command_type(command)), self._pivot)


def fingerprint(definition: SagaDefinition[Any]) -> str:
    """A digest of everything a saga in flight depends on: its data's fields and types, each step's kind,
    name, command and compensation types, the replies it handles (and their fields: it decodes them), its
    timeout handler, and the pivot. The same version must always have the same fingerprint (the test over
    `functions/saga_versions.json`). Left out, as safe for sagas in flight: the retry budget, and the
    commands' fields (a command is built afresh from the data when it is sent)."""

    def fields(cls: type[Any]) -> list[list[str]]:
        hints = typing.get_type_hints(cls)
        return [[f.name, _type_name(hints[f.name])] for f in dataclasses.fields(cls)]

    steps: list[dict[str, Any]] = []
    for each in definition.steps:
        if isinstance(each, LocalStep):
            steps.append({"local": each.name, "compensation": each.compensation_name})
            continue
        steps.append({
            "participant": each.name, "command": each.command_type.TYPE,
            "compensation": None if each.compensation_type is None else each.compensation_type.TYPE,
            "replies": {name: fields(reply) for name, (reply, _) in sorted(each.reply_handlers.items())},
            "onTimeout": each.on_timeout is not None,
        })
    described = {"name": definition.name, "version": definition.version, "data": fields(definition.data_type),
                 "steps": steps, "pivot": definition.pivot}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint)

"""Hand-written fakes of the real interfaces, for tests without I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cloudevents.http import CloudEvent

from functions.account.messages import ReleaseCredit, ReserveCredit
from functions.goods.messages import ReleaseGoods, ReserveGoods
from saga.engine import HistoryEntry, SagaEngine, SagaInstance
from saga.messages import Reply, reply_event


class InMemorySagaStore:
    """The SagaStore protocol over dicts; every write advances the version by one, as the engine's do."""

    def __init__(self) -> None:
        self.instances: dict[str, SagaInstance] = {}
        self.history: dict[str, list[HistoryEntry]] = {}
        self.past_deadline: set[str] = set()  # the tests' clock: which sagas are overdue now

    def insert(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        assert instance.saga_id not in self.instances, "duplicate saga id"
        self.instances[instance.saga_id] = instance
        self.append(tx, instance.saga_id, history)

    def lock(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        found = self.instances.get(saga_id)
        return lambda: found if found is not None and found.saga_type == saga_type else None

    def lock_overdue(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        found = self.lock(tx, saga_type, saga_id)()
        overdue = found is not None and not found.finished and found.deadline_after is not None
        return lambda: found if overdue and saga_id in self.past_deadline else None

    def update(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        assert self.instances[instance.saga_id].version == instance.version - 1, "one version per write"
        self.instances[instance.saga_id] = instance
        self.append(tx, instance.saga_id, history)

    def append(self, tx: Any, saga_id: str, history: Sequence[HistoryEntry]) -> None:
        self.history.setdefault(saga_id, []).extend(history)

    def events(self, saga_id: str) -> list[tuple[str, str]]:
        return [(str(h.event), h.name) for h in self.history[saga_id]]


class RecordingTx:
    """Stands in for `saga.transaction.Tx`: records each statement queued, with its parameters."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> None:
        self.statements.append((sql, params))


def applied(engine: SagaEngine[Any], tx: Any, reply: CloudEvent) -> CloudEvent | None:
    """A reply handled as the step handler does: the saga read, then the decision (the next command)."""
    return engine.handle_reply(tx, reply)()


TEST_HANDLER = "/test/participant"  # the HANDLER of the unit tests' own commands
_HANDLERS = {command.TYPE: command.HANDLER for command in (ReserveGoods, ReleaseGoods, ReserveCredit, ReleaseCredit)}


def answer(command: CloudEvent, reply: Reply, source: str | None = None) -> CloudEvent:
    """The reply a participant would send to `command`: signed by the command's handler unless
    `source` says otherwise."""
    return reply_event(reply, command=command, source=source or _HANDLERS.get(command["type"], TEST_HANDLER))


"""Hand-written fakes of the real interfaces, for tests without I/O."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cloudevents.http import CloudEvent

from functions.account.messages import ReleaseCredit, ReserveCredit
from functions.goods.messages import ReleaseGoods, ReserveGoods
from saga.engine import HistoryEntry, SagaEngine, SagaInstance
from saga.messages import Reply, reply_event


class BySaga(dict):  # type: ignore[type-arg]
    """Keyed by (saga type, saga id); a plain id also works when one saga type alone uses it."""

    def _key(self, key: Any) -> Any:
        if isinstance(key, tuple):
            return key
        found = [k for k in dict.keys(self) if k[1] == key]  # the stored keys, not this class's lookup
        assert len(found) <= 1, f"{key} names sagas of several types: say which"
        return found[0] if found else ("?", key)

    def __getitem__(self, key: Any) -> Any:
        return super().__getitem__(self._key(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(self._key(key), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(self._key(key))


class InMemorySagaStore:
    """The SagaStore protocol over dicts; every write advances the version by one, as the engine's do."""

    def __init__(self) -> None:
        self.instances: BySaga = BySaga()  # (saga type, saga id) -> SagaInstance
        self.history: BySaga = BySaga()  # (saga type, saga id) -> [HistoryEntry]
        self.past_deadline: set[str] = set()  # the tests' clock: which sagas are overdue now

    def insert(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        key = (instance.saga_type, instance.saga_id)
        assert key not in self.instances, "duplicate saga"
        self.instances[key] = instance
        self.append(tx, instance.saga_type, instance.saga_id, history)

    def lock(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        found = self.instances.get((saga_type, saga_id))
        return lambda: found

    def lock_overdue(self, tx: Any, saga_type: str, saga_id: str) -> Callable[[], SagaInstance | None]:
        found = self.lock(tx, saga_type, saga_id)()
        overdue = found is not None and not found.finished and found.deadline_after is not None
        return lambda: found if overdue and saga_id in self.past_deadline else None

    def update(self, tx: Any, instance: SagaInstance, history: Sequence[HistoryEntry]) -> None:
        key = (instance.saga_type, instance.saga_id)
        assert self.instances[key].version == instance.version - 1, "one version per write"
        self.instances[key] = instance
        self.append(tx, instance.saga_type, instance.saga_id, history)

    def append(self, tx: Any, saga_type: str, saga_id: str, history: Sequence[HistoryEntry]) -> None:
        self.history.setdefault((saga_type, saga_id), []).extend(history)

    def events(self, saga_id: Any) -> list[tuple[str, str]]:
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


"""Versioned definitions: every version kept in a build is recorded with its fingerprint (a change
without a new version fails here), and each saga runs on the version it started with."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from functions.order.create_order_saga import create_order_saga
from localstack.infra import repo_root
from saga.dsl import DefinitionError, SagaDefinition, fingerprint, step
from saga.engine import SagaEngine
from saga.errors import UnknownDefinition
from tests.unit.fakes import InMemorySagaStore, answer, applied
from tests.unit.test_dsl_engine import Data, Done, Journal, a, b, begin, c, undo_a, undo_begin

RECORDED = repo_root() / "functions" / "saga_versions.json"


def engines() -> list[SagaEngine[Any]]:
    from functions.order.service import engines  # the engines the order functions run

    return list(engines.values())


def test_every_version_a_build_keeps_has_its_recorded_fingerprint() -> None:
    recorded = json.loads(RECORDED.read_text())
    for engine in engines():
        for version, definition in engine.definitions.items():
            digest = fingerprint(definition)
            known = recorded.get(definition.name, {}).get(str(version))
            assert known is not None, (f"{definition.name} v{version} is not recorded: add "
                                       f'"{version}": "{digest}" under "{definition.name}" in {RECORDED.name}')
            assert known == digest, (
                f"{definition.name} v{version} changed without a new version. Sagas in flight on v{version} would "
                f"be read with the new definition: build the new one with version={max(engine.definitions) + 1}, "
                f"keep this one in the engine's `older` while it has sagas in flight (`saga versions`), and record "
                f'"{max(engine.definitions) + 1}": "<its fingerprint>" in {RECORDED.name}')


@pytest.mark.parametrize("change", [
    lambda d: dataclasses.replace(d, steps=d.steps[:-1]),  # a step removed
    lambda d: dataclasses.replace(d, pivot=None),  # no pivot: the steps after it would be compensated
    lambda d: dataclasses.replace(d, steps=(d.steps[0], d.steps[2], d.steps[1], d.steps[3])),  # reordered
    lambda d: dataclasses.replace(d, data_type=_WiderData),  # a data field added
    lambda d: dataclasses.replace(d, steps=(d.steps[0], dataclasses.replace(d.steps[1], on_timeout=None),
                                            *d.steps[2:])),
])
def test_what_a_saga_in_flight_depends_on_changes_the_fingerprint(change: Any) -> None:
    assert fingerprint(change(create_order_saga)) != fingerprint(create_order_saga)


def test_the_retry_budget_does_not_change_the_fingerprint() -> None:
    cheaper = dataclasses.replace(create_order_saga, retry=dataclasses.replace(create_order_saga.retry, attempts=2))
    assert fingerprint(cheaper) == fingerprint(create_order_saga)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _WiderData(create_order_saga.data_type):  # type: ignore[name-defined,misc]
    coupon: str | None = None


def _versions() -> tuple[SagaDefinition[Data], SagaDefinition[Data]]:
    """v1: begin -> a -> b -> c; v2 drops b."""
    first = (step().invoke_local(begin).with_compensation(undo_begin)
             .step().invoke_participant(a).with_compensation(undo_a)
             .step().invoke_participant(b)
             .step().invoke_participant(c)
             .build(name="Versioned", data_type=Data, version=1))
    second = (step().invoke_local(begin).with_compensation(undo_begin)
              .step().invoke_participant(a).with_compensation(undo_a)
              .step().invoke_participant(c)
              .build(name="Versioned", data_type=Data, version=2))
    return first, second


def test_sagas_started_on_v1_finish_on_v1_while_new_ones_start_on_v2() -> None:
    first, second = _versions()
    store, tx = InMemorySagaStore(), Journal()
    old_build = SagaEngine(first, store)
    sent_old = old_build.start(tx, "old", Data())
    assert sent_old is not None
    new_build = SagaEngine(second, store, older=(first,))  # the function restarted on the new build
    sent_new = new_build.start(tx, "new", Data())
    assert sent_new is not None
    assert (store.instances["old"].definition_version, store.instances["new"].definition_version) == (1, 2)
    old_path, new_path = [], []
    for _ in range(3):
        if sent_old is not None:
            old_path.append(sent_old.get_data()["what"])  # type: ignore[index]
            sent_old = applied(new_build, tx, answer(sent_old, Done()))
        if sent_new is not None:
            new_path.append(sent_new.get_data()["what"])  # type: ignore[index]
            sent_new = applied(new_build, tx, answer(sent_new, Done()))
    assert old_path == ["a", "b", "c"] and new_path == ["a", "c"]
    assert store.instances["old"].finished and store.instances["new"].finished
    assert store.instances["old"].definition_version == 1


def test_a_saga_on_a_version_the_build_lacks_is_refused_not_misread() -> None:
    first, second = _versions()
    store, tx = InMemorySagaStore(), Journal()
    command = SagaEngine(second, store).start(tx, "ahead", Data())
    assert command is not None
    older_build = SagaEngine(first, store)
    with pytest.raises(UnknownDefinition, match="v2 is not in this build"):
        applied(older_build, tx, answer(command, Done()))
    # A step renamed under the same version is caught by the step's recorded name.
    store.instances["ahead"] = dataclasses.replace(store.instances["ahead"], step_name="renamed")
    with pytest.raises(UnknownDefinition, match="changed without a new version"):
        applied(SagaEngine(second, store), tx, answer(command, Done()))


def test_an_engine_takes_versions_of_one_saga_and_starts_on_the_newest() -> None:
    first, second = _versions()
    with pytest.raises(DefinitionError, match="newest"):
        SagaEngine(first, InMemorySagaStore(), older=(second,))
    with pytest.raises(DefinitionError, match="given twice"):
        SagaEngine(second, InMemorySagaStore(), older=(second,))
    with pytest.raises(DefinitionError, match="not another version"):
        SagaEngine(second, InMemorySagaStore(), older=(create_order_saga,))
    with pytest.raises(DefinitionError, match="versions start at 1"):
        step().invoke_participant(a).build(name="Bad", data_type=Data, version=0)


def test_new_sagas_can_be_held_on_an_older_version_for_a_two_phase_rollout() -> None:
    from functions.platform.config import _versions as start_versions

    first, second = _versions()
    with pytest.raises(DefinitionError, match="cannot start on v3"):
        SagaEngine(second, InMemorySagaStore(), older=(first,), start_on=3)
    store = InMemorySagaStore()
    SagaEngine(second, store, older=(first,), start_on=1).start(Journal(), "held", Data())
    assert store.instances["held"].definition_version == 1
    assert start_versions(" CancelOrderSaga=1, CreateOrderSaga=2") == {"CancelOrderSaga": 1, "CreateOrderSaga": 2}
    assert start_versions("") == {}
    with pytest.raises(ValueError, match="NAME=VERSION"):
        start_versions("CancelOrderSaga")

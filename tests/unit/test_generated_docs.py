"""The generated documents (`saga docs`): the committed ones are current, and what they say follows the
definitions and message classes: steps in order, the pivot, the compensation path, every event."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.docs import BROKER_TOPIC, EVENTS, ROOT, documents
from functions.order.cancel_order_saga import cancel_order_saga
from functions.order.create_order_saga import create_order_saga
from localstack.manifests import load
from saga.docs import ASYNCAPI, SAGAS_DIR, Then, mermaid, outline, stale, write
from saga.dsl import StepFailed, fail, step
from saga.messages import Command, Reply
from tests.unit.fakes import RecordingTx
from tests.unit.test_dsl_engine import Data, Done, a, b, begin, c, undo_a, undo_b, undo_begin

EDGE = re.compile(r'^\s+(\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$')


def edges(diagram: str) -> dict[tuple[str, str], list[str]]:
    """(from, to) -> the labels of the arrows between them (a solid and a dotted one), of a Mermaid flowchart."""
    found: dict[tuple[str, str], list[str]] = {}
    for line in diagram.splitlines():
        if match := EDGE.match(line):
            found.setdefault((match[1], match[4]), []).append(match[3] or "")
    return found


def committed_asyncapi() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / ASYNCAPI).read_text())
    return document


def test_the_committed_generated_docs_are_current() -> None:
    outdated = stale(ROOT, documents())
    assert not outdated, f"stale generated docs: {outdated}; regenerate them with `.venv/bin/saga docs`"


def test_generating_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    first = documents()
    assert write(tmp_path, first) == sorted(first)
    assert documents() == first
    assert write(tmp_path, documents()) == []


def test_stale_names_changed_missing_and_left_over_files_and_write_repairs_them(tmp_path: Path) -> None:
    files = documents()
    write(tmp_path, files)
    page = f"{SAGAS_DIR}/CreateOrderSaga-v1.md"
    (tmp_path / page).write_text("edited by hand\n")
    (tmp_path / ASYNCAPI).unlink()
    (tmp_path / SAGAS_DIR / "CancelOrderSaga-v0.md").write_text("a version no build has\n")
    expected = sorted([page, ASYNCAPI, f"{SAGAS_DIR}/CancelOrderSaga-v0.md"])
    assert stale(tmp_path, files) == expected
    assert write(tmp_path, files) == expected
    assert stale(tmp_path, files) == []
    assert not (tmp_path / SAGAS_DIR / "CancelOrderSaga-v0.md").exists()


def test_the_check_command_writes_nothing_and_fails_naming_the_stale_files(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from functions.docs import docs

    result = CliRunner().invoke(docs, ["--check", "--root", str(tmp_path)])
    assert result.exit_code == 1
    assert "docs/sagas/CreateOrderSaga-v1.md" in result.output and "saga docs" in result.output
    assert not any(tmp_path.iterdir())
    assert CliRunner().invoke(docs, ["--root", str(tmp_path)]).exit_code == 0
    assert CliRunner().invoke(docs, ["--check", "--root", str(tmp_path)]).exit_code == 0


def test_the_outline_is_plain_json_with_the_create_order_saga_as_defined() -> None:
    shape = outline(create_order_saga)
    assert json.loads(json.dumps(shape)) == shape
    assert (shape["type"], shape["version"], shape["pivot"]) == ("CreateOrderSaga", 1, "reserve_credit")
    assert [(s["name"], s["kind"], s["pivot"], s["retriable"]) for s in shape["steps"]] == [
        ("create", "local", False, False), ("reserve_goods", "remote", False, False),
        ("reserve_credit", "remote", True, False), ("approve", "local", False, True)]
    goods = shape["steps"][1]
    assert (goods["participant"], goods["command"], goods["compensation"]) == (
        "/functions/goods-reserve", "io.knativesaga.goods.reserve", "io.knativesaga.goods.release")
    assert goods["replies"] == ["GoodsReserved", "GoodsStockLimit", "GoodsNotFound"]
    assert goods["reactions"][0] == {"reply": "GoodsReserved", "outcome": "SUCCESS", "handler": "handle_goods_reserved",
                                     "then": Then.NEXT, "ifRejected": Then.COMPENSATE}  # PRICE_MISMATCH
    assert goods["reactions"][1]["then"] == Then.COMPENSATE_EARLIER and goods["reactions"][1]["ifRejected"] is None
    assert goods["onTimeout"] == {"then": Then.COMPENSATE, "handler": "handle_timeout"} and goods["timeout"] is True
    assert goods["compensationReplies"] == [
        {"reply": "GoodsReleased", "outcome": "SUCCESS", "then": Then.NEXT},
        {"reply": "GoodsReleaseRefused", "outcome": "FAILURE", "then": Then.RETRY}]
    assert [s["compensation"] for s in shape["steps"]] == [
        "reject", "io.knativesaga.goods.release", "io.knativesaga.account.releasecredit", None]


def test_the_create_order_diagram_names_every_step_in_order_and_marks_reserve_credit_as_the_pivot() -> None:
    diagram = mermaid(create_order_saga)
    names = ["create", "reserve_goods", "reserve_credit", "approve"]
    positions = [diagram.index(f'step{i}("{name}<br/>') if i in (0, 3) else diagram.index(f'step{i}["{name}<br/>')
                 for i, name in enumerate(names)]
    assert positions == sorted(positions)
    assert "class step2 pivot" in diagram and "class step3 retriable" in diagram
    reserve_credit = next(line for line in diagram.splitlines() if line.startswith("    step2["))
    assert reserve_credit.endswith('pivot: after it, only forward"]')
    forward = edges(diagram)
    assert [forward[("start", "step0")], forward[("step0", "step1")], forward[("step1", "step2")],
            forward[("step2", "step3")], forward[("step3", "completed")]] == [
        [""], [""], ["GoodsReserved"], ["CreditReserved"], [""]]


def test_compensations_run_backwards_for_the_steps_before_the_pivot_and_none_after_it() -> None:
    arrows = edges(mermaid(create_order_saga))
    assert arrows[("step1", "undo0")] == ["GoodsStockLimit, GoodsNotFound"]  # nothing reserved: undo the step before
    assert arrows[("step1", "undo1")] == [  # PRICE_MISMATCH, or silent: the goods step is undone too
        "GoodsReserved rejected by handle_goods_reserved", "no reply by the deadline"]
    assert arrows[("step2", "undo1")] == ["CustomerNotFound, CustomerCreditLimitExceeded"]
    assert arrows[("step2", "undo2")] == ["no reply by the deadline"]  # a silent credit step is released too
    assert (arrows[("undo2", "undo1")], arrows[("undo1", "undo0")], arrows[("undo0", "compensated")]) == (
        ["CreditReleased"], ["GoodsReleased"], [""])
    assert arrows[("undo1", "undo1")] == ["GoodsReleaseRefused, no reply: again, after a backoff"]
    assert arrows[("undo1", "parked")] == ["out of retries"]
    assert not [edge for edge in arrows if edge[0] == "step3" and edge[1] != "completed"]  # approve: forward only
    assert "undo3" not in mermaid(create_order_saga)


def test_the_cancel_saga_after_its_pivot_retries_and_parks_instead_of_compensating() -> None:
    diagram = mermaid(cancel_order_saga)
    arrows = edges(diagram)
    assert "undo" not in diagram and "COMPENSATED" not in diagram
    assert "class step0 pivot" in diagram and "class step1,step2,step3 retriable" in diagram
    assert arrows[("step1", "step1")] == ["GoodsReleaseRefused, no reply: again, after a backoff"]
    assert arrows[("step1", "parked")] == arrows[("step2", "parked")] == ["out of retries"]
    assert [s["name"] for s in outline(cancel_order_saga)["steps"]] == [
        "lock", "return_order_goods", "release_order_credit", "cancelled"]


def test_changing_a_definition_changes_its_diagram() -> None:
    toy = (step().invoke_local(begin).with_compensation(undo_begin)
           .step().invoke_participant(a).with_compensation(undo_a)
           .step().invoke_participant(b).with_compensation(undo_b)
           .step().invoke_participant(c)
           .build(name="Toy", data_type=Data))
    with_pivot = (step().invoke_local(begin).with_compensation(undo_begin)
                  .step().invoke_participant(a).with_compensation(undo_a)
                  .step().invoke_participant(b).with_compensation(undo_b).pivot()
                  .step().invoke_participant(c)
                  .build(name="Toy", data_type=Data))
    before, after = mermaid(toy), mermaid(with_pivot)
    assert before != after
    # c has no compensation of its own: refused or silent, the saga compensates from b down.
    assert edges(before)[("step3", "undo2")] == ["Refused", "no reply by the deadline"]
    assert "class step2 pivot" not in before
    assert edges(after)[("step3", "step3")] == ["Refused, no reply: again, after a backoff"]
    assert "class step2 pivot" in after and "class step3 retriable" in after
    assert mermaid(dataclasses.replace(toy, steps=toy.steps[:3])) != before  # a step removed


def _rejects(data: Data, reply: Done) -> Data | StepFailed[Data]:
    return fail(data)


def _accepts(data: Data, reply: Done) -> Data:
    return data


@pytest.mark.parametrize(("handler", "if_rejected", "label"), [
    (_rejects, Then.COMPENSATE, "Done rejected by _rejects"),
    (_accepts, None, None),
    (lambda data, reply: data, Then.COMPENSATE, "Done rejected by #lt;lambda#gt;"),  # unannotated: it may
])
def test_a_reply_handler_that_may_fail_the_step_shows_its_rejection_path(handler: Any, if_rejected: str | None,
                                                                         label: str | None) -> None:
    definition = (step().invoke_local(begin).with_compensation(undo_begin)
                  .step().invoke_participant(a).on_reply(Done, handler).with_compensation(undo_a)
                  .build(name="Toy", data_type=Data))
    assert outline(definition)["steps"][1]["reactions"][0]["ifRejected"] == if_rejected
    assert edges(mermaid(definition))[("step1", "undo1")] == [*([label] if label else []), "no reply by the deadline"]


def _message_classes() -> set[type[Any]]:
    """Every command and reply class the functions define (their modules are imported by the definitions)."""
    found: set[type[Any]] = set()
    for base in (Command, Reply):
        found |= {cls for cls in base.__subclasses__() if cls.__module__.startswith("functions.")}
    return found


def test_every_event_type_the_code_can_publish_is_in_asyncapi_with_its_attributes_and_payload_schema() -> None:
    document = committed_asyncapi()
    messages, schemas = document["components"]["messages"], document["components"]["schemas"]
    assert document["asyncapi"] == "3.0.0" and document["channels"]["broker"]["address"] == BROKER_TOPIC
    classes = _message_classes()
    assert {cls.__name__ for cls in classes} | {e.name for e in EVENTS} == set(messages)
    for cls in classes:
        message = messages[cls.__name__]
        attributes = message["headers"]["allOf"][1]
        is_command = issubclass(cls, Command)
        assert attributes["properties"]["type"]["const"] == (cls.TYPE if is_command else "io.knativesaga.saga.reply")
        wanted = {"id", "source", "type", "specversion", "sagaid", "sagatype", "sagastep", "partitionkey"}
        assert wanted | (set() if is_command else {"causationid", "replytype", "replyoutcome"}) <= set(
            attributes["required"])
        schema = schemas[message["payload"]["$ref"].rsplit("/", 1)[1]]
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(schema["properties"]) == fields
        assert set(schema.get("required", [])) == {f.name for f in dataclasses.fields(cls)
                                                   if f.default is dataclasses.MISSING}
        if is_command:  # a request/reply operation whose replies are the ones the class declares
            reply = document["operations"][f"send{cls.__name__}"]["reply"]
            assert reply["messages"] == [{"$ref": f"#/channels/broker/messages/{r.__name__}"} for r in cls.REPLIES]
    assert schemas["GoodsReserved"]["properties"]["unit_price"]["type"] == "string"  # money: a decimal string
    for tracing in ("traceparent", "tracestate"):
        assert tracing in schemas["CloudEventAttributes"]["properties"]
        assert all(tracing not in m["headers"]["allOf"][1]["required"] for m in messages.values())


class _RegisteringTx(RecordingTx):
    """auth's register in a transaction where the username is free and the next customer id is 12223."""

    def query(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, params))
        return self

    def scalar(self) -> str:
        return "12223"


def test_user_registered_as_auth_api_publishes_it_is_what_asyncapi_documents() -> None:
    from functions.auth.service import register

    _, event = register(_RegisteringTx(), "ann", "a-password-hash")  # type: ignore[arg-type]  # a fake Tx
    message = committed_asyncapi()["components"]["messages"]["UserRegistered"]
    attributes = message["headers"]["allOf"][1]
    assert attributes["properties"]["type"]["const"] == event["type"]
    assert attributes["properties"]["source"]["const"] == event["source"]
    assert set(attributes["required"]) == set(event.get_attributes())
    payload = committed_asyncapi()["components"]["schemas"]["UserRegistered"]
    assert set(event.get_data() or ()) == set(payload["properties"]) == set(payload["required"])


def test_the_documented_topic_and_receivers_are_the_knative_manifests() -> None:
    manifests = load(ROOT / "knative")
    assert manifests.broker_topic == BROKER_TOPIC
    documented = {m["headers"]["allOf"][1]["properties"]["type"]["const"]
                  for m in committed_asyncapi()["components"]["messages"].values()}
    assert {trigger.filter["type"] for trigger in manifests.triggers} <= documented  # all it consumes
    for event in EVENTS:
        if event.knative_source:
            assert set(event.receivers) == {ping.sink for ping in manifests.pings}
        else:
            assert set(event.receivers) == {t.subscriber for t in manifests.triggers
                                            if t.filter["type"] == event.event_type}

"""The local stack reads knative/ strictly: what it would misread stops it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from localstack.manifests import ManifestError, load, seconds

KNATIVE = Path(__file__).resolve().parents[2] / "knative"


def test_the_project_manifests_route_every_saga_event() -> None:
    manifests = load(KNATIVE)
    routed = {t.filter.get("type"): t.subscriber for t in manifests.triggers}
    assert routed == {
        "io.knativesaga.saga.reply": "order-saga",
        "io.knativesaga.goods.reserve": "goods-reserve",
        "io.knativesaga.goods.release": "goods-release",
        "io.knativesaga.account.reservecredit": "account-reserve-credit",
        "io.knativesaga.account.releasecredit": "account-release-credit",
        "io.knativesaga.user.registered": "account-provision",
    }
    assert all(not t.ordered and t.delivery.dead_letter_topic and t.delivery.retry > 0 for t in manifests.triggers)
    assert {"order-api", "auth-api"} <= manifests.bound_to_broker


def edited(tmp_path: Path, file: str, edit) -> Path:  # type: ignore[no-untyped-def]
    copy = tmp_path / "knative"
    shutil.copytree(KNATIVE, copy)
    documents = list(yaml.safe_load_all((copy / file).read_text()))
    for document in documents:
        edit(document)
    (copy / file).write_text(yaml.safe_dump_all(documents))
    return copy


def trigger(name: str):  # type: ignore[no-untyped-def]
    def apply(edit):  # type: ignore[no-untyped-def]
        def on(document):  # type: ignore[no-untyped-def]
            if document.get("kind") == "Trigger" and document["metadata"]["name"] == name:
                edit(document)
        return on
    return apply


def test_subscriber_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    def rename(d):  # type: ignore[no-untyped-def]
        d["spec"]["subscriber"]["ref"]["name"] = "goods-reserv"

    with pytest.raises(ManifestError, match="goods-reserv"):
        load(edited(tmp_path, "goods.yaml", trigger("goods-reserve")(rename)))


def test_unsupported_filter_dialect_is_refused(tmp_path: Path) -> None:
    def filters(d):  # type: ignore[no-untyped-def]
        d["spec"]["filters"] = [{"prefix": {"type": "io."}}]

    with pytest.raises(ManifestError, match="filters"):
        load(edited(tmp_path, "goods.yaml", trigger("goods-reserve")(filters)))


def test_misspelt_delivery_field_is_refused(tmp_path: Path) -> None:
    def misspell(d):  # type: ignore[no-untyped-def]
        d["spec"]["delivery"]["retries"] = d["spec"]["delivery"].pop("retry")

    with pytest.raises(ManifestError, match="retries"):
        load(edited(tmp_path, "account.yaml", trigger("account-provision")(misspell)))


def test_iso_durations() -> None:
    assert seconds("PT0.2S") == 0.2
    assert seconds("PT1M30S") == 90
    with pytest.raises(ManifestError):
        seconds("200ms")

"""The broker topic as Knative's data plane reads it, and the ingress as Knative's receiver answers.

The local stack writes the records a cluster would (the ingress: the receiver's; the dispatcher:
replies), so the test reads the whole topic with what Knative 1.22 reads it with, the CloudEvents
Java SDK 4.0.1 (`knative_reader/`): every record must decode, and keep its `partitionkey`, which
that SDK reads from the `ce_partitionkey` header only (the record key alone would lose it)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from localstack.infra import repo_root
from localstack.kafka import maven_jars
from localstack.stack import Stack
from tests.e2e.client import Api, Customer, order_body

pytestmark = pytest.mark.e2e

READER = Path(__file__).parent / "knative_reader"


def knative_read(stack: Stack) -> list[list[str]]:
    """partition, offset, OK or the error, event id, partitionkey, record key: per record of the topic."""
    libs = maven_jars(READER / "pom.xml", repo_root() / ".local" / "knative-reader" / "libs")
    java = shutil.which("java")
    assert java is not None, "the test needs Java (the local Kafka does too)"
    done = subprocess.run(
        [java, "-cp", f"{libs}/*", str(READER / "DecodeRecords.java"), stack.infra.kafka_bootstrap,
         stack.topology.topic],
        capture_output=True, text=True, timeout=180, check=True,
    )
    return [line.split("\t") for line in done.stdout.splitlines()]


def structured(**attributes: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "/tests/structured",
            "type": "io.knativesaga.test.structured", **attributes}


def post_structured(stack: Stack, document: object) -> httpx.Response:
    return httpx.post(stack.ingress_url, content=json.dumps(document).encode(), timeout=30,
                      headers={"Content-Type": "application/cloudevents+json; charset=utf-8"})


def test_structured_events_with_typed_extensions_are_taken_as_knative_takes_them(stack: Stack) -> None:
    # Boolean and integer extensions: the CloudEvents type system has them; the ingress once answered 500.
    typed = structured(flag=True, count=3, partitionkey="structured-1", data={"a": 1})
    assert post_structured(stack, typed).status_code == 202
    encoded = structured(datacontenttype="application/octet-stream",
                         data_base64=base64.b64encode(b"\x00\x01bytes").decode())
    assert post_structured(stack, encoded).status_code == 202


@pytest.mark.parametrize("document", [
    [structured()],  # a JSON array is not one event
    structured(id=""),
    structured(specversion="0.1"),
    structured(nested={"not": "allowed"}),
    structured(UpperCase="x"),
    structured(data_base64="***"),
    structured(time="yesterday"),
], ids=["array", "empty id", "unknown specversion", "object extension", "bad name", "bad base64", "bad time"])
def test_invalid_events_get_a_problem_400_at_the_ingress(stack: Stack, document: object) -> None:
    answer = post_structured(stack, document)
    assert answer.status_code == 400, answer.text
    assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert answer.json()["status"] == 400


def test_every_record_on_the_broker_topic_decodes_as_knative_reads_it(
    api: Api, stack: Stack, customer: Customer
) -> None:
    approved = api.place_order(customer.token, order_body(customer.customer_id, 2, 1, 10)).json()["orderId"]
    rejected = api.place_order(customer.token, order_body(customer.customer_id, 1, 3, 111)).json()["orderId"]
    assert api.settled(customer.token, approved)["state"] == "APPROVED"
    assert api.settled(customer.token, rejected)["state"] == "REJECTED"
    keyed = structured(partitionkey="structured-2", enabled=False, data="text")
    assert post_structured(stack, keyed).status_code == 202

    records = knative_read(stack)
    assert records, "the topic holds the events of every test so far"
    failed = [r for r in records if r[2] != "OK"]
    assert not failed, f"records Knative cannot decode: {failed[:5]}"
    lost = [r for r in records if r[5] and r[4] != r[5]]
    assert not lost, f"records whose partitionkey is not their key: {lost[:5]}"
    ids = {r[3]: r for r in records}
    assert ids[keyed["id"]][4:] == ["structured-2", "structured-2"]
    # The order's saga: the commands (through the ingress) and the replies (from the dispatcher).
    saga_records = [r for r in records if r[4] in (approved, rejected)]
    assert len(saga_records) >= 6, saga_records

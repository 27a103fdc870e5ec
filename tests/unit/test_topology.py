"""The replay Job's view of the broker, read from the Kubernetes API, is the same routing the local
stack reads from `knative/`: same groups, filters, delivery rules, ordering and dead-letter topic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from localstack.manifests import load
from saga.eventing.topology import TopologyError, from_kubernetes

KNATIVE = Path(__file__).resolve().parents[2] / "knative"
EVENTING = "/apis/eventing.knative.dev"


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(KNATIVE.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d and "kind" in d)
    return docs


def api_server(docs: list[dict[str, Any]], ready: bool = True) -> httpx.Client:
    """An API server answering the three reads the replay Job's Role allows, from `docs`."""
    def items(kind: str) -> list[dict[str, Any]]:
        found = [d for d in docs if d["kind"] == kind]
        if kind == "Trigger" and ready:
            for trigger in found:
                service = trigger["spec"]["subscriber"]["ref"]["name"]
                trigger["status"] = {"subscriberUri": f"http://{service}.knative-saga.svc.cluster.local"}
        return found

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == f"{EVENTING}/v1/namespaces/knative-saga/brokers/saga":
            return httpx.Response(200, json=items("Broker")[0])
        if path == f"{EVENTING}/v1/namespaces/knative-saga/triggers":
            return httpx.Response(200, content=json.dumps({"items": items("Trigger")}))
        if path == f"{EVENTING}/v1alpha1/namespaces/knative-saga/kafkasinks":
            return httpx.Response(200, json={"items": items("KafkaSink")})
        return httpx.Response(404, json={"reason": "NotFound"})

    return httpx.Client(base_url="https://api.test", transport=httpx.MockTransport(answer))


def test_cluster_topology_matches_what_the_local_stack_reads() -> None:
    cluster = from_kubernetes("knative-saga", "saga", "kafka:9092", api_server(documents()))
    local = load(KNATIVE)
    assert cluster.topic == local.broker_topic == "knative-broker-knative-saga-saga"
    assert cluster.dead_letter_topics == tuple(local.dead_letter_topics) == ("knative-saga-dead-letters",)
    assert len(cluster.triggers) == len(local.triggers) == 6
    for spec in local.triggers:
        trigger = cluster.trigger(spec.name)
        assert trigger.url == f"http://{spec.subscriber}.knative-saga.svc.cluster.local"
        assert (trigger.group, trigger.filter, trigger.ordered) == (spec.consumer_group, spec.filter, spec.ordered)
        assert trigger.delivery == spec.delivery


def test_a_trigger_that_is_not_ready_stops_the_replay() -> None:
    with pytest.raises(TopologyError, match="no resolved subscriber"):
        from_kubernetes("knative-saga", "saga", "kafka:9092", api_server(documents(), ready=False))


def test_a_missing_broker_is_an_error() -> None:
    with pytest.raises(httpx.HTTPStatusError):
        from_kubernetes("knative-saga", "other", "kafka:9092", api_server(documents()))

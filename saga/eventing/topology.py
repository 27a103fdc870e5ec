"""The broker's routing as data: its Kafka topic and, per Trigger, the consumer group, filter,
resolved subscriber URL and delivery policy.

Two sources give the same shape: the local stack writes it to `<root>/topology.json` when it starts
(it resolves subscribers to local ports), and in a cluster it is read from the Kubernetes API (the
Triggers' `spec` and `status.subscriberUri`), which is what the replay Job does.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

_ISO_SECONDS = re.compile(r"^PT(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?$")
DELIVERY_ORDER = "kafka.eventing.knative.dev/delivery.order"
SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class TopologyError(ValueError):
    """The routing cannot be read or does not name what was asked for."""


def seconds(duration: str) -> float:
    """An ISO-8601 duration of minutes/seconds (`PT0.2S`, `PT1M`) in seconds."""
    match = _ISO_SECONDS.match(duration)
    if not match or duration == "PT":
        raise TopologyError(f"unsupported duration {duration!r}")
    return float(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def consumer_group(namespace: str, trigger: str) -> str:
    # eventing-kafka-broker's default `triggers.consumergroup.template` (since 1.10).
    return f"knative-trigger-{namespace}-{trigger}"


def broker_topic(namespace: str, broker: str) -> str:
    # eventing-kafka-broker's default `brokers.topic.template`.
    return f"knative-broker-{namespace}-{broker}"


@dataclass(frozen=True)
class Delivery:
    """A Trigger's `spec.delivery` (over its Broker's), with Knative's defaults."""

    retry: int = 0
    backoff_policy: str = "exponential"
    backoff_delay: float = 1.0
    timeout: float = 600.0
    dead_letter_topic: str | None = None  # the KafkaSink's topic


def delivery_of(spec: Mapping[str, Any], sink_topics: Mapping[str, str], default: Delivery) -> Delivery:
    """`spec.delivery` read over `default` (a Broker's, for its Triggers); `sink_topics`: KafkaSink -> topic."""
    dead_letter = default.dead_letter_topic
    if "deadLetterSink" in spec:
        ref = spec["deadLetterSink"].get("ref", {})
        if ref.get("kind") != "KafkaSink" or ref.get("name") not in sink_topics:
            raise TopologyError(f"dead-letter sink {ref.get('name')!r} is not a KafkaSink of this broker")
        dead_letter = sink_topics[ref["name"]]
    return Delivery(
        retry=int(spec.get("retry", default.retry)),
        backoff_policy=spec.get("backoffPolicy", default.backoff_policy),
        backoff_delay=seconds(spec["backoffDelay"]) if "backoffDelay" in spec else default.backoff_delay,
        timeout=seconds(spec["timeout"]) if "timeout" in spec else default.timeout,
        dead_letter_topic=dead_letter,
    )


@dataclass(frozen=True)
class Trigger:
    name: str
    group: str
    filter: dict[str, str]
    url: str
    delivery: Delivery = Delivery()
    ordered: bool = False


@dataclass(frozen=True)
class Topology:
    bootstrap: str
    topic: str
    triggers: tuple[Trigger, ...]
    dead_letter_topics: tuple[str, ...] = field(default=())

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> Topology:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise TopologyError(f"{path} does not exist: is the local stack running (`make dev`)?") from exc
        return cls(
            bootstrap=raw["bootstrap"], topic=raw["topic"],
            triggers=tuple(Trigger(**{**t, "delivery": Delivery(**t["delivery"])}) for t in raw["triggers"]),
            dead_letter_topics=tuple(raw.get("dead_letter_topics", ())),
        )

    def trigger(self, name: str) -> Trigger:
        for trigger in self.triggers:
            if trigger.name == name:
                return trigger
        known = ", ".join(sorted(t.name for t in self.triggers))
        raise TopologyError(f"no Trigger named {name!r}; the broker has: {known}")

    def with_bootstrap(self, bootstrap: str) -> Topology:
        return replace(self, bootstrap=bootstrap)


def from_kubernetes(namespace: str, broker: str, bootstrap: str, api: Any | None = None) -> Topology:
    """The broker's Triggers as the cluster has them, through the API server with the pod's service
    account (RBAC in knative/replay/rbac.yaml: get/list Brokers, Triggers and KafkaSinks)."""
    client = api or _in_cluster_client()
    base = f"/apis/eventing.knative.dev/v1/namespaces/{namespace}"
    broker_doc = client.get(f"{base}/brokers/{broker}").raise_for_status().json()
    sinks = client.get(f"/apis/eventing.knative.dev/v1alpha1/namespaces/{namespace}/kafkasinks")
    sink_topics = {s["metadata"]["name"]: s["spec"]["topic"] for s in sinks.raise_for_status().json()["items"]}
    broker_delivery = delivery_of(broker_doc["spec"].get("delivery", {}), sink_topics, Delivery())
    triggers = []
    for doc in client.get(f"{base}/triggers").raise_for_status().json()["items"]:
        if doc["spec"].get("broker") != broker:
            continue
        url = doc.get("status", {}).get("subscriberUri")
        if not url:
            raise TopologyError(f"Trigger {doc['metadata']['name']} has no resolved subscriber (is it Ready?)")
        triggers.append(Trigger(
            name=doc["metadata"]["name"],
            group=consumer_group(namespace, doc["metadata"]["name"]),
            filter={k: str(v) for k, v in doc["spec"].get("filter", {}).get("attributes", {}).items()},
            url=url,
            delivery=delivery_of(doc["spec"].get("delivery", {}), sink_topics, broker_delivery),
            ordered=doc["metadata"].get("annotations", {}).get(DELIVERY_ORDER) == "ordered",
        ))
    return Topology(bootstrap=bootstrap, topic=broker_topic(namespace, broker), triggers=tuple(triggers),
                    dead_letter_topics=tuple(sorted(set(sink_topics.values()))))


def _in_cluster_client() -> Any:
    import httpx

    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    token = (SERVICE_ACCOUNT / "token").read_text().strip()
    return httpx.Client(base_url=f"https://{host}:{port}", verify=str(SERVICE_ACCOUNT / "ca.crt"),
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)

"""Reads the `knative/` manifests (the ones a cluster gets) into what the local stack needs.

Only the kinds Knative would act on are interpreted; anything the stack would silently misread
(a filter dialect it does not implement, a subscriber that does not exist, an unknown delivery
field) stops the stack at start-up, so a Trigger that would not route in a cluster fails here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saga.eventing import topology
from saga.eventing.topology import DELIVERY_ORDER, Delivery

LOCAL_PORT = "knative-saga.dev/local-port"
_DELIVERY_FIELDS = {"retry", "backoffPolicy", "backoffDelay", "timeout", "deadLetterSink"}


class ManifestError(ValueError):
    """The manifests cannot be run as written."""


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    secret: tuple[str, str] | None = None  # (secret name, key)


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    env: tuple[EnvVar, ...]
    labels: dict[str, str]
    local_port: int | None

    def env_value(self, name: str) -> str | None:
        return next((e.value for e in self.env if e.name == name), None)


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    namespace: str
    filter: dict[str, str]
    subscriber: str
    delivery: Delivery
    ordered: bool

    @property
    def consumer_group(self) -> str:
        return topology.consumer_group(self.namespace, self.name)


@dataclass(frozen=True)
class PingSpec:
    name: str
    namespace: str
    schedule: str
    data: str
    content_type: str
    sink: str


@dataclass(frozen=True)
class Manifests:
    namespace: str
    broker: str
    broker_topic: str
    partitions: int
    dead_letter_topics: dict[str, int]  # KafkaSink topic -> partitions
    services: dict[str, ServiceSpec]
    triggers: tuple[TriggerSpec, ...]
    pings: tuple[PingSpec, ...]
    bound_to_broker: frozenset[str] = field(default_factory=frozenset)  # Services that get K_SINK


def seconds(duration: str) -> float:
    try:
        return topology.seconds(duration)
    except topology.TopologyError as exc:
        raise ManifestError(str(exc)) from exc


def _documents(directory: Path) -> tuple[str, list[dict[str, Any]]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    namespace = kustomization.get("namespace", "default")
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            documents.extend(_documents(path)[1])
        else:
            documents.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for document in documents:
        document.setdefault("metadata", {}).setdefault("namespace", namespace)
    return namespace, documents


def load(directory: Path) -> Manifests:
    namespace, documents = _documents(directory)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for document in documents:
        by_kind.setdefault(document.get("kind", ""), []).append(document)

    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    sinks = {d["metadata"]["name"]: d["spec"] for d in by_kind.get("KafkaSink", [])}
    brokers = by_kind.get("Broker", [])
    if len(brokers) != 1:
        raise ManifestError(f"the local stack runs exactly one Broker, found {len(brokers)}")
    broker = brokers[0]
    if broker["metadata"].get("annotations", {}).get("eventing.knative.dev/broker.class") != "Kafka":
        raise ManifestError("the Broker must be of class Kafka")
    config = configmaps.get(broker["spec"].get("config", {}).get("name", ""), {})
    broker_delivery = _delivery(broker["spec"].get("delivery", {}), sinks, Delivery(), "Broker")

    services = {d["metadata"]["name"]: _service(d) for d in by_kind.get("Service", [])
                if d.get("apiVersion", "").startswith("serving.knative.dev/")}
    triggers = tuple(_trigger(d, services, sinks, broker_delivery, broker["metadata"]["name"])
                     for d in by_kind.get("Trigger", []))
    pings = tuple(_ping(d, services) for d in by_kind.get("PingSource", []))
    bound: set[str] = set()
    for binding in by_kind.get("SinkBinding", []):
        subject = binding["spec"]["subject"]
        sink = binding["spec"]["sink"].get("ref", {})
        if sink.get("kind") != "Broker" or sink.get("name") != broker["metadata"]["name"]:
            raise ManifestError(f"SinkBinding {binding['metadata']['name']}: the sink must be the Broker")
        wanted = subject.get("selector", {}).get("matchLabels", {})
        for service in services.values():
            if subject.get("name") == service.name or (wanted and wanted.items() <= service.labels.items()):
                bound.add(service.name)
    return Manifests(
        namespace=namespace,
        broker=broker["metadata"]["name"],
        broker_topic=topology.broker_topic(broker["metadata"]["namespace"], broker["metadata"]["name"]),
        partitions=int(config.get("default.topic.partitions", 10)),
        dead_letter_topics={s["topic"]: int(s.get("numPartitions", 1)) for s in sinks.values()},
        services=services,
        triggers=triggers,
        pings=pings,
        bound_to_broker=frozenset(bound),
    )


def _service(document: dict[str, Any]) -> ServiceSpec:
    containers = document["spec"]["template"]["spec"]["containers"]
    env = []
    for entry in containers[0].get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            env.append(EnvVar(entry["name"], secret=(ref["name"], ref["key"])))
        elif "value" in entry:
            env.append(EnvVar(entry["name"], value=str(entry["value"])))
        else:
            raise ManifestError(f"Service {document['metadata']['name']}: env {entry['name']} is not supported")
    port = document["metadata"].get("annotations", {}).get(LOCAL_PORT)
    return ServiceSpec(
        name=document["metadata"]["name"], env=tuple(env), labels=document["metadata"].get("labels", {}),
        local_port=int(port) if port else None,
    )


def _delivery(spec: dict[str, Any], sinks: dict[str, Any], default: Delivery, owner: str) -> Delivery:
    """The shared reading (`saga.eventing.topology.delivery_of`), refusing what it would silently ignore."""
    unknown = set(spec) - _DELIVERY_FIELDS
    if unknown:
        raise ManifestError(f"{owner}: delivery fields not supported locally: {sorted(unknown)}")
    if spec.get("backoffPolicy", default.backoff_policy) not in ("linear", "exponential"):
        raise ManifestError(f"{owner}: backoffPolicy {spec['backoffPolicy']!r}")
    try:
        return topology.delivery_of(spec, {name: sink["topic"] for name, sink in sinks.items()}, default)
    except topology.TopologyError as exc:
        raise ManifestError(f"{owner}: {exc}") from exc


def _trigger(
    document: dict[str, Any], services: dict[str, ServiceSpec], sinks: dict[str, Any], default: Delivery, broker: str
) -> TriggerSpec:
    name = document["metadata"]["name"]
    spec = document["spec"]
    if spec.get("broker") != broker:
        raise ManifestError(f"Trigger {name}: unknown broker {spec.get('broker')!r}")
    if "filters" in spec:
        raise ManifestError(f"Trigger {name}: `spec.filters` is not interpreted locally; use filter.attributes")
    ref = spec.get("subscriber", {}).get("ref", {})
    if ref.get("kind") != "Service" or ref.get("name") not in services:
        raise ManifestError(f"Trigger {name}: subscriber {ref.get('name')!r} is not a Knative Service here")
    order = document["metadata"].get("annotations", {}).get(DELIVERY_ORDER, "unordered")
    if order not in ("ordered", "unordered"):
        raise ManifestError(f"Trigger {name}: {DELIVERY_ORDER} must be ordered or unordered")
    return TriggerSpec(
        name=name,
        namespace=document["metadata"]["namespace"],
        filter={k: str(v) for k, v in spec.get("filter", {}).get("attributes", {}).items()},
        subscriber=ref["name"],
        delivery=_delivery(spec.get("delivery", {}), sinks, default, f"Trigger {name}"),
        ordered=order == "ordered",
    )


def _ping(document: dict[str, Any], services: dict[str, ServiceSpec]) -> PingSpec:
    spec = document["spec"]
    ref = spec.get("sink", {}).get("ref", {})
    if ref.get("kind") != "Service" or ref.get("name") not in services:
        raise ManifestError(f"PingSource {document['metadata']['name']}: sink must be a Service here")
    return PingSpec(
        name=document["metadata"]["name"], namespace=document["metadata"]["namespace"],
        schedule=spec["schedule"], data=spec.get("data", ""),
        content_type=spec.get("contentType", "application/json"), sink=ref["name"],
    )

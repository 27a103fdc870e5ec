"""The restricted Pod Security Standard in knative-saga: the namespace enforces it, every pod template
meets it (tests/manifests/pod_security.py), the project's image runs with a read-only root, Knative gets
the settings in the form it accepts, and Istio injects containers that meet it too.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.manifests import checks, pod_security
from tests.manifests.checks import REPO
from tests.manifests.rendered import VERSIONS, Docs, named

pytestmark = pytest.mark.filterwarnings("ignore:Field name .* shadows an attribute:UserWarning")


def test_the_namespace_enforces_restricted_at_the_cluster_version(overlay: Docs) -> None:
    labels = named(overlay, "Namespace", checks.NAMESPACE)["metadata"]["labels"]
    minor = "v" + ".".join(checks.KUBERNETES_VERSION.split(".")[:2])
    assert minor == re.search(r":(v\d+\.\d+)\.", VERSIONS["KIND_NODE_IMAGE"]).group(1)  # type: ignore[union-attr]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == minor


def test_every_pod_in_the_namespace_meets_the_restricted_profile(overlay: Docs) -> None:
    pods = [d for d in overlay if pod_security.pod_spec(d) is not None]
    assert {d["metadata"]["namespace"] for d in pods} == {checks.NAMESPACE}
    assert len(pods) == 17  # 14 functions, Kafka, PostgreSQL, db-init
    problems = [p for doc in pods for p in pod_security.restricted_problems(doc)]
    assert not problems, "\n".join(problems)


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    return pod_security.pod_spec(doc)["containers"][0]  # type: ignore[index,no-any-return]


@pytest.mark.parametrize("mutate", [
    lambda d: _container(d)["securityContext"].pop("allowPrivilegeEscalation"),
    lambda d: _container(d)["securityContext"].update({"allowPrivilegeEscalation": True}),
    lambda d: _container(d)["securityContext"]["capabilities"].update({"drop": ["NET_RAW"]}),
    lambda d: _container(d)["securityContext"]["capabilities"].update({"add": ["NET_ADMIN"]}),
    lambda d: _container(d)["securityContext"].update({"privileged": True}),
    lambda d: _container(d)["securityContext"].update({"runAsNonRoot": False}),
    lambda d: _container(d)["securityContext"].update({"runAsUser": 0}),
    lambda d: _container(d)["securityContext"].update({"seccompProfile": {"type": "Unconfined"}}),
    lambda d: _container(d)["securityContext"].update({"procMount": "Unmasked"}),
    lambda d: _container(d)["securityContext"].update({"seLinuxOptions": {"user": "root"}}),
    lambda d: _container(d)["ports"][0].update({"hostPort": 5432}),
    lambda d: _container(d)["readinessProbe"].update({"tcpSocket": {"port": 5432, "host": "10.0.0.1"}}),
    lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
    lambda d: d["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"),
    lambda d: d["spec"]["template"]["spec"]["securityContext"].update({"runAsUser": 0}),
    lambda d: d["spec"]["template"]["spec"].update({"hostNetwork": True}),
    lambda d: d["spec"]["template"]["spec"]["securityContext"].update({"sysctls": [{"name": "kernel.msgmax"}]}),
    lambda d: d["spec"]["template"]["spec"].update({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}),
    lambda d: d["spec"]["template"]["spec"].update(
        {"initContainers": [{"name": "init", "image": "busybox:1.37", "securityContext": {}}]}),
])
def test_restricted_rules_fail_on_a_bad_pod(overlay: Docs, mutate: Any) -> None:
    postgres = copy.deepcopy(named(overlay, "StatefulSet", "saga-postgres"))
    assert pod_security.restricted_problems(postgres) == []
    mutate(postgres)
    assert pod_security.restricted_problems(postgres)


def test_a_function_pod_without_its_security_context_fails(base: Docs) -> None:
    function = copy.deepcopy(named(base, "Service", "order-api"))
    assert pod_security.restricted_problems(function) == checks.read_only_root_rules(function) == []
    _container(function).pop("securityContext")  # what Knative warned about: every field unset
    problems = pod_security.restricted_problems(function)
    assert len(problems) == 4 and checks.read_only_root_rules(function)  # escalation, capabilities, root, seccomp


def test_pods_of_the_project_image_have_a_read_only_root_and_a_writable_tmp(overlay: Docs) -> None:
    ours = [d for d in overlay if any("knative-saga-functions" in c["image"] for c in checks.containers(d))]
    assert len(ours) == 15
    problems = [p for doc in overlay for p in checks.read_only_root_rules(doc)]
    assert not problems, "\n".join(problems)
    job = copy.deepcopy(named(overlay, "Job", "saga-db-init"))
    job["spec"]["template"]["spec"]["volumes"][0] = {"name": "tmp", "configMap": {"name": "x"}}
    assert checks.read_only_root_rules(job)
    job = copy.deepcopy(named(overlay, "Job", "saga-db-init"))
    _container(job)["securityContext"]["readOnlyRootFilesystem"] = False
    assert checks.read_only_root_rules(job)


@pytest.mark.parametrize("mutate", [
    lambda s: s["spec"]["template"]["spec"].update({"securityContext": {"runAsNonRoot": True}}),
    lambda s: s["spec"]["template"]["spec"].update({"volumes": [{"name": "d", "hostPath": {"path": "/data"}}]}),
    lambda s: _container(s).update({"volumeMounts": [{"name": "tmp", "mountPath": "/dev/"}]}),
])
def test_service_rules_fail_on_what_knative_refuses_by_default(base: Docs, mutate: Any) -> None:
    function = copy.deepcopy(named(base, "Service", "order-api"))
    assert checks.service_rules(function) == []
    mutate(function)
    assert checks.service_rules(function)


def test_istio_injects_restricted_containers() -> None:
    [operator] = checks.load_yaml(REPO / "istio" / "install" / "istio-kind.yaml")
    # istio-cni instead of the istio-init container (NET_ADMIN, NET_RAW, root) ...
    assert operator["spec"]["components"]["cni"]["enabled"] is True
    # ... and a seccomp profile on istio-proxy and istio-validation, which have every other field set.
    assert operator["spec"]["values"]["global"]["proxy"]["seccompProfile"] == {"type": "RuntimeDefault"}
    kind_up = (REPO / "scripts" / "cluster" / "kind-up.sh").read_text()
    assert kind_up.index("rollout status daemonset/istio-cni-node") < kind_up.index("serving-core.yaml")

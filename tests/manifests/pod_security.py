"""The Pod Security Standard `restricted` (which includes `baseline`), checked on the pod templates of
the manifests before the API server's admission does it at pod creation (where a failing Job or
StatefulSet only shows as pods that never appear).

The controls and their allowed values are those of Kubernetes' own implementation,
k8s.io/pod-security-admission/policy (check_*.go), for the versions this project runs (1.35). The
relaxations for pods in a user namespace (`hostUsers: false`) and for Windows pods are not modelled:
no manifest here uses either, so they are reported like any other setting.

Pods Knative or Istio complete (queue-proxy, istio-proxy, istio-validation) are not in the manifests:
their settings are checked where they are decided (tests/manifests/test_manifests.py, Istio install).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# check_restrictedVolumes.go: the only inline volume sources `restricted` allows.
RESTRICTED_VOLUME_SOURCES = frozenset({"configMap", "downwardAPI", "emptyDir", "projected", "secret", "csi",
                                       "persistentVolumeClaim", "ephemeral", "image"})
# check_seccompProfile_restricted.go, check_appArmorProfile.go.
ALLOWED_PROFILE_TYPES = frozenset({"RuntimeDefault", "Localhost"})
# check_capabilities_restricted.go: drop ALL, add nothing but this.
ALLOWED_ADDED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# check_seLinuxOptions.go.
ALLOWED_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
# check_sysctls.go (1.35): namespaced sysctls isolated from other pods.
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
})
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "ReplicationController"}


def pod_spec(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The pod spec a document creates pods from (Knative Services included), else None."""
    kind, spec = doc.get("kind"), doc.get("spec", {})
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    if kind in _WORKLOADS or (kind == "Service" and doc.get("apiVersion", "").startswith("serving.knative.dev/")):
        return spec.get("template", {}).get("spec", {})
    return None


def restricted_problems(doc: Mapping[str, Any]) -> list[str]:
    """What the `restricted` profile forbids in the pods this document creates (empty = admitted)."""
    pod = pod_spec(doc)
    if pod is None:
        return []
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    problems = [f"{name}: {p}" for p in _pod_problems(pod)]
    pod_context = pod.get("securityContext") or {}
    for container in _all_containers(pod):
        problems += [f"{name} container {container.get('name')}: {p}"
                     for p in _container_problems(container, pod_context)]
    return problems


def _pod_problems(pod: Mapping[str, Any]) -> list[str]:
    problems = [f"spec.{field} must be unset or false" for field in ("hostNetwork", "hostPID", "hostIPC")
                if pod.get(field)]
    context = pod.get("securityContext") or {}
    problems += _shared_context_problems(context, "spec.securityContext")
    if context.get("runAsUser") == 0:
        problems.append("spec.securityContext.runAsUser must not be 0")
    if context.get("runAsNonRoot") is False:
        problems.append("spec.securityContext.runAsNonRoot must not be false")
    if (context.get("seccompProfile") or {}).get("type") not in (None, *ALLOWED_PROFILE_TYPES):
        problems.append("spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost")
    problems += [f"sysctl {s.get('name')} is not in the safe set" for s in context.get("sysctls") or []
                 if s.get("name") not in SAFE_SYSCTLS]
    for volume in pod.get("volumes") or []:
        sources = set(volume) - {"name"}
        if not sources <= RESTRICTED_VOLUME_SOURCES:
            problems.append(f"volume {volume.get('name')}: {sorted(sources - RESTRICTED_VOLUME_SOURCES)} "
                            "is not an allowed volume type")
    return problems


def _container_problems(container: Mapping[str, Any], pod_context: Mapping[str, Any]) -> list[str]:
    context = container.get("securityContext") or {}
    problems = _shared_context_problems(context, "securityContext")
    if context.get("privileged"):
        problems.append("securityContext.privileged must be unset or false")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("securityContext.allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in (capabilities.get("drop") or []):
        problems.append("securityContext.capabilities.drop must include ALL")
    if not set(capabilities.get("add") or []) <= ALLOWED_ADDED_CAPABILITIES:
        problems.append("securityContext.capabilities.add may only hold NET_BIND_SERVICE")
    non_root = context.get("runAsNonRoot")
    if non_root is False or (non_root is None and pod_context.get("runAsNonRoot") is not True):
        problems.append("runAsNonRoot must be true (on the container, or on the pod and not false here)")
    if context.get("runAsUser") == 0:
        problems.append("securityContext.runAsUser must not be 0")
    seccomp = (context.get("seccompProfile") or {}).get("type") or (pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ALLOWED_PROFILE_TYPES:
        problems.append("seccompProfile.type must be RuntimeDefault or Localhost (on the container or the pod)")
    if context.get("procMount") not in (None, "Default"):
        problems.append("securityContext.procMount must be unset or Default")
    problems += [f"ports[].hostPort {port['hostPort']} is forbidden" for port in container.get("ports") or []
                 if port.get("hostPort")]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        for handler in ("httpGet", "tcpSocket"):
            if ((container.get(probe) or {}).get(handler) or {}).get("host"):
                problems.append(f"{probe}.{handler}.host is forbidden")
    for hook in ("postStart", "preStop"):
        for handler in ("httpGet", "tcpSocket"):
            if (((container.get("lifecycle") or {}).get(hook) or {}).get(handler) or {}).get("host"):
                problems.append(f"lifecycle.{hook}.{handler}.host is forbidden")
    return problems


def _shared_context_problems(context: Mapping[str, Any], where: str) -> list[str]:
    """Fields that pod and container security contexts share and baseline restricts the same way."""
    problems = []
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in ALLOWED_SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"{where}.seLinuxOptions: only the container types, no user or role")
    if (context.get("appArmorProfile") or {}).get("type") not in (None, *ALLOWED_PROFILE_TYPES):
        problems.append(f"{where}.appArmorProfile.type must be RuntimeDefault or Localhost")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        problems.append(f"{where}.windowsOptions.hostProcess must be unset or false")
    return problems


def _all_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or []),
            *(pod.get("ephemeralContainers") or [])]

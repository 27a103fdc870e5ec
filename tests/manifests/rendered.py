"""The rendered manifests the tests share: where the kustomizations are, lookups, and the rules a set
of rendered documents is held to that more than one test module uses.
"""

from __future__ import annotations

from typing import Any

from tests.manifests import checks
from tests.manifests.checks import REPO

BASE = REPO / "knative"
OVERLAY = REPO / "deploy" / "kind"
VERSIONS = checks.read_env_file(REPO / "scripts" / "cluster" / "versions.env")
SCRIPTS = sorted((REPO / "scripts" / "cluster").glob("*.sh"))

Docs = list[dict[str, Any]]


def by_kind(docs: Docs, kind: str) -> Docs:
    return [d for d in docs if d["kind"] == kind]


def named(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def replay_job_problems(job_docs: Docs, overlay: Docs) -> list[str]:
    """The replay Job runs `saga replay` with an account that can read the routing and change nothing."""
    problems = [p for doc in job_docs for p in checks.validate(doc)]
    job = next(d for d in job_docs if d["kind"] == "Job")
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    account = pod["spec"].get("serviceAccountName")
    if container.get("command") != ["saga", "replay"]:
        problems.append(f"the Job must run `saga replay`, runs {container.get('command')}")
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    broker = by_kind(overlay, "Broker")[0]["metadata"]
    if env.get("SAGA_REPLAY_BROKER") != f"{broker['namespace']}/{broker['name']}":
        problems.append(f"SAGA_REPLAY_BROKER {env.get('SAGA_REPLAY_BROKER')} is not the Broker")
    bootstrap = named(overlay, "ConfigMap", "saga-kafka-broker-config")["data"]["bootstrap.servers"]
    if env.get("KAFKA_BOOTSTRAP_SERVERS") != bootstrap:
        problems.append("KAFKA_BOOTSTRAP_SERVERS differs from the broker's bootstrap.servers")
    if pod["metadata"].get("annotations", {}).get("sidecar.istio.io/inject") != "false":
        problems.append("the Job must run outside the mesh, like the Kafka dispatcher (no sidecar)")
    if job["spec"].get("backoffLimit") != 0:
        problems.append("a failed replay must not be retried behind the operator's back")
    bindings = [b for b in by_kind(overlay, "RoleBinding")
                if {"kind": "ServiceAccount", "name": account, "namespace": "knative-saga"} in b["subjects"]]
    roles = [named(overlay, "Role", b["roleRef"]["name"]) for b in bindings]
    if not any(d["metadata"]["name"] == account for d in by_kind(overlay, "ServiceAccount")) or not roles:
        problems.append(f"service account {account} or its RoleBinding is not deployed")
    granted = {(g, r, v) for role in roles for rule in role["rules"] for g in rule["apiGroups"]
               for r in rule["resources"] for v in rule["verbs"]}
    wanted = {("eventing.knative.dev", r, v) for r in ("brokers", "triggers", "kafkasinks") for v in ("get", "list")}
    if granted != wanted:
        problems.append(f"the replay account must read exactly the routing: {sorted(granted ^ wanted)}")
    return problems

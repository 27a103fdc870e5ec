"""PostgreSQL's connection budget: max_connections must admit every client pod at its most replicas with
every process's connection pool full, or a scale-up meets "too many clients" instead of a slower answer.

The rule is computed from the rendered manifests (max-scale, replicas, parallelism, each container's env)
and a function giving one process's pool under that env, so it keeps holding when the pools change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import pairwise
from typing import Any

from tests.manifests import pod_security
from tests.manifests.checks import containers, name_of

# PostgreSQL's defaults (runtime-config-connection): connections kept for superusers and pg_use_reserved_connections.
_RESERVED_DEFAULTS = {"superuser_reserved_connections": 3, "reserved_connections": 0}
_MAX_CONNECTIONS_DEFAULT = 100


def postgres_settings(docs: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """The `-c name=value` settings of the PostgreSQL StatefulSet's container."""
    [container] = [c for d in docs if d.get("kind") == "StatefulSet" for c in containers(d)
                   if c.get("image", "").startswith("postgres:")]
    args = [*container.get("command", [])[1:], *container.get("args", [])]
    return dict(value.partition("=")[::2] for flag, value in pairwise(args) if flag == "-c")


def database_clients(docs: Iterable[Mapping[str, Any]]) -> list[tuple[str, int | None, dict[str, str]]]:
    """Every pod template with a DATABASE_URL: (name, most pods at once or None if unbounded, literal env)."""
    clients = []
    for doc in docs:
        spec = pod_security.pod_spec(doc)
        with_database = [c for c in containers(doc) if any(e.get("name") == "DATABASE_URL" for e in c.get("env", []))]
        if spec is None or not with_database:
            continue
        pods: int | None
        if doc.get("kind") == "Service":  # Knative: max-scale bounds the pods; unset or "0" = unlimited
            annotations = doc["spec"]["template"].get("metadata", {}).get("annotations", {})
            pods = int(annotations.get("autoscaling.knative.dev/max-scale", "0")) or None
        elif doc.get("kind") == "Job":
            pods = doc["spec"].get("parallelism", 1)
        else:
            pods = doc["spec"].get("replicas", 1)
        for container in with_database:
            env = {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}
            clients.append((f"{name_of(doc)} container {container.get('name', '')}".rstrip(), pods, env))
    return clients


def connection_rules(docs: Iterable[Mapping[str, Any]], per_process: Callable[[Mapping[str, str]], int]) -> list[str]:
    """PostgreSQL's max_connections covers the worst case: every client at its most pods, every process's
    pool full (`per_process(env)`: pool_size + max_overflow under that container's env), plus the
    reserved connections. WORKERS is how many serving processes a container runs (default 1)."""
    docs = list(docs)
    settings = postgres_settings(docs)
    worst = sum(int(settings.get(name, default)) for name, default in _RESERVED_DEFAULTS.items())
    problems = []
    for name, pods, env in database_clients(docs):
        if pods is None:
            problems.append(f"{name}: no max-scale, so its connections to PostgreSQL are unbounded")
        else:
            worst += pods * int(env.get("WORKERS", "1")) * per_process(env)
    allowed = int(settings.get("max_connections", _MAX_CONNECTIONS_DEFAULT))
    if allowed < worst:
        problems.append(f"PostgreSQL max_connections={allowed} is below the worst case of {worst}")
    return problems

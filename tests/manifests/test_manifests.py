"""Offline checks of everything `make kind-up` / `make deploy` would apply: schemas, the project's rules,
the mesh policies, the kind config, the Dockerfile, the scripts and the Makefile targets.
(test_pod_security.py: the restricted Pod Security Standard; test_generated.py: what the scripts generate.)

Each rule is also run once on a tiny bad example, so a check that can never fail is caught too.
A missing checker (kubectl, shellcheck, hadolint, kubernetes-validate, cloudcoil models) fails the test.
"""

from __future__ import annotations

import ast
import copy
import os
import re
import subprocess
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.manifests import checks, connections
from tests.manifests.checks import REPO
from tests.manifests.rendered import (
    BASE,
    DIGEST,
    SCRIPTS,
    VERSIONS,
    Docs,
    by_kind,
    named,
    replay_job_problems,
)

# cloudcoil's generated eventing models warn about their own field names on import.
pytestmark = pytest.mark.filterwarnings("ignore:Field name .* shadows an attribute:UserWarning")

ISSUER = "https://auth.knative-saga.example"
AUDIENCE = "knative-saga"
JWKS_URI = "http://auth-api.knative-saga.svc.cluster.local/.well-known/jwks.json"
API_PATHS = ["/orders", "/orders/*", "/admin/sagas", "/admin/sagas/*", "/goods/*", "/account/*"]
# The console's data (its page and sign-in form are public: docs/console.md).
CONSOLE_DATA = ["/console/api/*"]
CONSOLE_PRINCIPAL = "cluster.local/ns/knative-saga/sa/saga-console"


def a_service() -> dict[str, Any]:
    return yaml.safe_load((BASE / "order.yaml").read_text().split("\n---\n")[0])


def a_trigger() -> dict[str, Any]:
    return next(d for d in checks.load_yaml(BASE / "goods.yaml") if d["kind"] == "Trigger")


# --- rendering and schemas -------------------------------------------------------------------------

def test_base_and_overlay_render_with_kubectl_kustomize(base: Docs, overlay: Docs) -> None:
    assert len(checks.knative_services(base)) == 14
    base_ids = {(d["kind"], d["metadata"]["name"]) for d in base}
    overlay_ids = {(d["kind"], d["metadata"]["name"]) for d in overlay}
    assert base_ids < overlay_ids, "the overlay must contain the whole base"
    assert {("StatefulSet", "saga-kafka"), ("StatefulSet", "saga-postgres"), ("Job", "saga-db-init"),
            ("PeerAuthentication", "default"), ("VirtualService", "saga-api")} <= overlay_ids


def test_every_document_matches_its_schema_strictly(overlay: list[dict[str, Any]]) -> None:
    problems = [p for doc in overlay for p in checks.validate(doc)]
    assert not problems, "\n".join(problems)


def test_schema_checks_catch_misspelt_fields() -> None:
    service = a_service()
    service["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["prot"] = 8080
    assert any("prot" in p for p in checks.validate(service))
    trigger = a_trigger()
    trigger["spec"]["delivery"]["retries"] = 3
    assert any("retries" in p for p in checks.validate(trigger))
    policy = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
              "metadata": {"name": "x", "namespace": "n"},
              "spec": {"rules": [{"from": [{"source": {"requestPrincipal": ["*"]}}]}]}}
    assert any("requestPrincipal" in p for p in checks.validate(policy))
    core = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
            "spec": {"ports": [{"port": 80, "tragetPort": 8080}]}}
    assert checks.validate(core)
    sink = next(d for d in checks.load_yaml(BASE / "broker.yaml") if d["kind"] == "KafkaSink")
    sink["spec"]["partitions"] = 1
    assert checks.validate(sink)
    assert checks.validate({"apiVersion": "example.dev/v1", "kind": "Unknown", "metadata": {"name": "x"}})


def test_documented_delivery_timeout_is_the_only_tolerated_extra() -> None:
    trigger = a_trigger()
    assert checks.validate(trigger) == []
    trigger["spec"]["subscriber"]["ref"]["nmae"] = "x"
    assert checks.validate(trigger)


# --- project rules -----------------------------------------------------------------------------------

def test_every_function_scales_to_zero_and_is_sized_probed_and_bounded(overlay: list[dict[str, Any]]) -> None:
    problems = [p for doc in checks.knative_services(overlay) for p in checks.service_rules(doc)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mutate", [
    lambda s: s["spec"]["template"]["metadata"]["annotations"].update({"autoscaling.knative.dev/min-scale": "1"}),
    lambda s: s["spec"]["template"]["metadata"]["annotations"].pop("autoscaling.knative.dev/target-burst-capacity"),
    lambda s: s["spec"]["template"]["spec"].pop("containerConcurrency"),
    lambda s: s["spec"]["template"]["spec"].pop("timeoutSeconds"),
    lambda s: s["spec"]["template"]["spec"]["containers"][0]["resources"].pop("limits"),
    lambda s: s["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe"),
    lambda s: s["spec"]["template"]["metadata"]["labels"].clear(),
    lambda s: s["metadata"]["labels"].pop("networking.knative.dev/visibility"),
])
def test_service_rules_fail_on_a_bad_service(mutate: Any) -> None:
    service = a_service()
    assert checks.service_rules(service) == []
    mutate(service)
    assert checks.service_rules(service)


def test_every_trigger_is_filtered_unordered_retried_and_dead_lettered(overlay: list[dict[str, Any]]) -> None:
    services = {d["metadata"]["name"] for d in checks.knative_services(overlay)}
    sinks = {d["metadata"]["name"] for d in by_kind(overlay, "KafkaSink")}
    brokers = {d["metadata"]["name"] for d in by_kind(overlay, "Broker")}
    triggers = by_kind(overlay, "Trigger")
    assert len(triggers) == 6
    problems = [p for doc in triggers for p in checks.trigger_rules(doc, services, sinks, brokers)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("mutate", [
    lambda t: t["spec"].pop("filter"),
    lambda t: t["spec"]["filter"]["attributes"].update({"type": ""}),
    lambda t: t["metadata"]["annotations"].clear(),
    lambda t: t["metadata"]["annotations"].update({"kafka.eventing.knative.dev/delivery.order": "ordered"}),
    lambda t: t["spec"]["delivery"].pop("retry"),
    lambda t: t["spec"]["delivery"].pop("deadLetterSink"),
    lambda t: t["spec"]["subscriber"]["ref"].update({"name": "goods-reserv"}),
    lambda t: t["spec"].update({"broker": "default"}),
])
def test_trigger_rules_fail_on_a_bad_trigger(mutate: Any) -> None:
    trigger = a_trigger()
    args = ({"goods-reserve"}, {"saga-dead-letters"}, {"saga"})
    assert checks.trigger_rules(trigger, *args) == []
    mutate(trigger)
    assert checks.trigger_rules(trigger, *args)


def test_no_literal_secret_anywhere(overlay: list[dict[str, Any]]) -> None:
    problems = [p for doc in overlay for p in checks.secret_rules(doc)]
    for path in [*REPO.glob("knative/**/*.yaml"), *REPO.glob("istio/**/*.yaml"), *REPO.glob("deploy/**/*.yaml"),
                 REPO / "kind-config.yaml", REPO / "Dockerfile", *SCRIPTS, REPO / "mk" / "cluster.mk"]:
        problems += checks.literal_secret_rules(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)
    functions = {d["metadata"]["name"]: d for d in checks.knative_services(overlay)}
    env = {e["name"]: e for e in functions["auth-api"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SAGA_JWT_PRIVATE_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "saga-jwt-signing-key", "key": "private-key.pem"}


def test_secret_rules_fail_on_literal_secrets() -> None:
    service = a_service()
    env = service["spec"]["template"]["spec"]["containers"][0]["env"]
    assert checks.secret_rules(service) == []
    env.append({"name": "SAGA_ADMIN_PASSWORD", "value": "hunter22"})
    assert checks.secret_rules(service)
    service = a_service()
    url = next(e for e in service["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "DATABASE_URL")
    url.pop("valueFrom")
    url["value"] = "postgresql://saga:s3cret@db:5432/saga"
    assert len(checks.secret_rules(service)) == 2
    assert checks.secret_rules({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    pem_header = "-----BEGIN RSA " + "PRIVATE KEY-----"  # split so no tracked file looks like it holds a key
    assert checks.literal_secret_rules(f"key: |\n  {pem_header}\n", "x")
    assert not checks.literal_secret_rules('url="postgresql://saga:${password}@host/saga"', "x")


def test_images_are_pinned_and_the_deployed_function_image_by_digest(overlay: Docs, deployed: Docs) -> None:
    # Third-party images: exact versions. The function image is a placeholder (`:dev`) in git ...
    third_party = [i for i in checks.images(overlay) if not i.startswith(VERSIONS["FUNCTION_IMAGE"])]
    assert len(third_party) == 2
    problems = [p for image in third_party for p in checks.image_rules(image)]
    assert not problems, "\n".join(problems)
    # ... which deploy.sh applies pinned by the pushed image's digest.
    images = checks.images(deployed)
    ours = [i for i in images if i.startswith(VERSIONS["FUNCTION_IMAGE"])]
    assert len(ours) == 15 and all(  # 14 functions + the db-init Job
        i == f"{VERSIONS['FUNCTION_IMAGE']}@{DIGEST}" for i in ours)
    problems = [p for image in images for p in checks.image_rules(image, digest_required=image in ours)]
    assert not problems


@pytest.mark.parametrize("image", ["postgres", "postgres:latest", "apache/kafka:stable", "localhost:5001/x"])
def test_image_rules_fail_on_unpinned_images(image: str) -> None:
    assert checks.image_rules(image)
    assert checks.image_rules("postgres:18.4", digest_required=True)
    assert not checks.image_rules("postgres:18.4")
    assert not checks.image_rules("localhost:5001/x@sha256:" + "a" * 64, digest_required=True)


def test_local_stack_still_reads_the_base() -> None:
    from localstack.manifests import load

    manifests = load(BASE)
    assert len(manifests.services) == 14 and len(manifests.triggers) == 6
    assert manifests.services["order-api"].local_port == 8080


def test_kafka_and_database_wiring_is_consistent(overlay: list[dict[str, Any]]) -> None:
    config = named(overlay, "ConfigMap", "saga-kafka-broker-config")["data"]
    assert config["default.topic.replication.factor"] == "1"  # one broker on kind
    assert config["bootstrap.servers"] == "saga-kafka.knative-saga.svc.cluster.local:9092"
    kafka = named(overlay, "StatefulSet", "saga-kafka")["spec"]["template"]
    env = {e["name"]: e.get("value") for e in kafka["spec"]["containers"][0]["env"]}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{config['bootstrap.servers']}"
    assert kafka["spec"]["enableServiceLinks"] is False
    for name in ("saga-kafka", "saga-postgres"):
        pod = named(overlay, "StatefulSet", name)["spec"]["template"]
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    job = named(overlay, "Job", "saga-db-init")["spec"]["template"]
    assert job["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert job["spec"]["containers"][0]["command"] == ["saga", "db-init", "--seed-catalogue"]
    assert "--seed-dev" not in yaml.safe_dump(job)  # never the dev stack's users in a cluster
    namespace = named(overlay, "Namespace", "knative-saga")["metadata"]["labels"]
    assert namespace["istio-injection"] == "enabled"


# --- the replay Job --------------------------------------------------------------------------------

def test_replay_job_renders_validates_and_only_reads_the_routing(overlay: Docs) -> None:
    job_docs = checks.kustomize(REPO / "knative" / "replay" / "job")
    assert [d["kind"] for d in job_docs] == ["Job"]
    problems = replay_job_problems(job_docs, overlay)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("break_it", ["verbs", "sidecar", "command"])
def test_replay_job_rules_fail_on_a_bad_job(overlay: Docs, break_it: str) -> None:
    job_docs = checks.kustomize(REPO / "knative" / "replay" / "job")
    broken = copy.deepcopy(overlay)
    pod = job_docs[0]["spec"]["template"]
    if break_it == "verbs":
        named(broken, "Role", "saga-replay")["rules"][0]["verbs"].append("update")
    elif break_it == "sidecar":
        pod["metadata"]["annotations"]["sidecar.istio.io/inject"] = "true"
    else:
        pod["spec"]["containers"][0]["command"] = ["saga", "db-init"]
    assert replay_job_problems(job_docs, broken)


# --- the console --------------------------------------------------------------------------------------

def test_console_reads_the_routing_as_the_replay_job_does(overlay: Docs) -> None:
    """The console's redrive is `saga replay --dead-letters`: the same Broker and Kafka, and an account that
    can read the routing and change nothing."""
    service = named(overlay, "Service", "console")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in service["containers"][0]["env"]}
    broker = by_kind(overlay, "Broker")[0]["metadata"]
    assert env["SAGA_REPLAY_BROKER"] == f"{broker['namespace']}/{broker['name']}"
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == named(overlay, "ConfigMap", "saga-kafka-broker-config")["data"][
        "bootstrap.servers"]
    assert env["SAGA_AUTH_URL"] == JWKS_URI.removesuffix("/.well-known/jwks.json")
    account = service["serviceAccountName"]
    bindings = [b for b in by_kind(overlay, "RoleBinding")
                if {"kind": "ServiceAccount", "name": account, "namespace": "knative-saga"} in b["subjects"]]
    granted = {(g, r, v) for b in bindings for rule in named(overlay, "Role", b["roleRef"]["name"])["rules"]
               for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert granted == {("eventing.knative.dev", r, v) for r in ("brokers", "triggers", "kafkasinks")
                       for v in ("get", "list")}
    principal = f"cluster.local/ns/knative-saga/sa/{account}"
    assert principal == CONSOLE_PRINCIPAL, "the mesh policies name the console's account"


# --- PostgreSQL: connections -----------------------------------------------------------------------

def pool_connections(env: Mapping[str, str]) -> int:
    """The connections one function process may hold: the pool functions/platform/database.py builds
    under this container's env (THREADS, ...) and its LISTEN connection, if it has one."""
    from functions.platform import database

    return database.connections_held(env)


def test_every_function_that_listens_is_counted_in_the_budget(overlay: Docs) -> None:
    """A function that opens a LISTEN connection (functions/platform/notices.py) holds one more than
    its pool: the budget must know it, so the list in database.py must name every such module."""
    from functions.platform import database

    listening = {
        str(path.relative_to(REPO)) for path in (REPO / "functions").rglob("*.py")
        if any(isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Notices"
               for node in ast.walk(ast.parse(path.read_text())))
    }
    assert listening, "no function opens a LISTEN connection: the search is broken"
    assert listening == database.LISTENING_SOURCES
    # Counted only where a Service runs that source: a listener in a helper module would count nothing.
    sources = {env.get("FUNCTION_SOURCE") for _, _, env in connections.database_clients(overlay)}
    assert sources >= database.LISTENING_SOURCES


def test_postgres_admits_every_pool_at_max_scale(overlay: Docs) -> None:
    clients = connections.database_clients(overlay)
    assert len(clients) == 15  # 14 functions + the db-init Job
    problems = connections.connection_rules(overlay, pool_connections)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("change", ["max-scale", "unbounded", "threads", "max_connections"])
def test_connection_rules_fail_when_the_pools_outgrow_postgres(overlay: Docs, change: str) -> None:
    broken = copy.deepcopy(overlay)
    function = named(broken, "Service", "order-api")["spec"]["template"]
    if change == "max-scale":
        function["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] = "20"
    elif change == "unbounded":
        function["metadata"]["annotations"].pop("autoscaling.knative.dev/max-scale")
    elif change == "threads":
        next(e for e in _container_env(function) if e["name"] == "THREADS")["value"] = "60"
    else:
        named(broken, "StatefulSet", "saga-postgres")["spec"]["template"]["spec"]["containers"][0]["args"] = [
            "-c", "max_connections=300"]
    assert connections.connection_rules(broken, pool_connections)


def _container_env(template: dict[str, Any]) -> list[dict[str, Any]]:
    return template["spec"]["containers"][0]["env"]  # type: ignore[no-any-return]


# --- Istio ---------------------------------------------------------------------------------------------

def test_namespace_is_strict_mtls(overlay: list[dict[str, Any]]) -> None:
    policies = by_kind(overlay, "PeerAuthentication")
    strict = [("knative-saga", {"mtls": {"mode": "STRICT"}})]
    assert [(p["metadata"]["namespace"], p["spec"]) for p in policies] == strict


def test_jwt_rules_match_the_auth_function(overlay: list[dict[str, Any]]) -> None:
    functions = {d["metadata"]["name"]: d for d in checks.knative_services(overlay)}
    for name in ("order-api", "goods-api", "account-api"):
        env = {e["name"]: e.get("value") for e in functions[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert (env["SAGA_JWT_ISSUER"], env["SAGA_JWT_AUDIENCE"], env["SAGA_JWKS_URL"]) == (ISSUER, AUDIENCE, JWKS_URI)
    rules = by_kind(overlay, "RequestAuthentication")
    assert {r["metadata"]["namespace"] for r in rules} == {"istio-system", "knative-saga"}
    for rule in rules:
        [jwt] = rule["spec"]["jwtRules"]
        assert (jwt["issuer"], jwt["audiences"], jwt["jwksUri"]) == (ISSUER, [AUDIENCE], JWKS_URI)
        assert "jwks" not in jwt and jwt["forwardOriginalToken"] is True
        assert jwt["timeout"] == "30s", "the default 5 s fetch timeout is shorter than auth-api's cold start"
    operator = checks.load_yaml(REPO / "istio" / "install" / "istio-kind.yaml")[0]
    # hybrid: envoy-only mode rejects every token when jwksUri names no mesh cluster (an ExternalName alias).
    assert operator["spec"]["values"]["pilot"]["env"]["PILOT_JWT_ENABLE_REMOTE_JWKS"] == "hybrid"


def _policies(overlay: list[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    return [p for p in by_kind(overlay, "AuthorizationPolicy") if p["metadata"]["namespace"] == namespace]


def authorization_problems(overlay: list[dict[str, Any]]) -> list[str]:
    """The access model of istio/authorization-policies.yaml, as rules over the rendered policies."""
    problems = []
    policies = _policies(overlay, "knative-saga")
    if not any(p.get("spec") in ({}, None) for p in policies):
        problems.append("no deny-by-default (empty ALLOW) policy in knative-saga")
    allows = {p["spec"].get("selector", {}).get("matchLabels", {}).get("knative-saga.dev/access"): p
              for p in policies if p.get("spec") and p["spec"].get("action", "ALLOW") == "ALLOW"}
    for access in ("api", "auth", "events", "console"):
        if access not in allows:
            problems.append(f"no ALLOW policy for knative-saga.dev/access={access}")
    if None not in allows or "knative-serving" not in str(allows[None]):
        problems.append("Knative's probes and metrics (knative-serving) are not allowed to every function")
    events = allows.get("events", {}).get("spec", {}).get("rules", [])
    sources = {ns for rule in events for f in rule.get("from", []) for ns in f["source"].get("namespaces", [])}
    if "knative-eventing" not in sources or not sources <= {"knative-eventing", "knative-serving", "istio-system"}:
        problems.append(f"event functions must be callable only via the eventing data plane, got {sources}")
    # Besides the data plane, only the console's redrive (`saga replay --dead-letters`, as an admin asked).
    principals = {p for rule in events for f in rule.get("from", []) for p in f["source"].get("principals", [])}
    if not principals <= {CONSOLE_PRINCIPAL}:
        problems.append(f"event functions are callable by identities other than the console's: {principals}")
    if any(set(f["source"]) - {"namespaces", "principals"} for rule in events for f in rule.get("from", [])):
        problems.append("event functions' callers are named by namespace or principal only")
    if any("requestPrincipals" in str(rule) for rule in allows.get("auth", {}).get("spec", {}).get("rules", [])):
        problems.append("auth's public endpoints must not require a JWT")
    for namespace, selector, paths in (("knative-saga", {"knative-saga.dev/access": "api"}, API_PATHS),
                                       ("knative-saga", {"knative-saga.dev/access": "console"}, CONSOLE_DATA),
                                       ("istio-system", {"istio": "ingressgateway"}, API_PATHS + CONSOLE_DATA)):
        denies = [p for p in _policies(overlay, namespace) if p["spec"].get("action") == "DENY"
                  and p["spec"].get("selector", {}).get("matchLabels") == selector]
        covered = {path for p in denies for rule in p["spec"]["rules"]
                   if any(f["source"].get("notRequestPrincipals") == ["*"] for f in rule.get("from", []))
                   for to in rule.get("to", []) for path in to["operation"].get("paths", [])}
        if not set(paths) <= covered:
            problems.append(f"{namespace}: API paths without a JWT-required DENY: {set(paths) - covered}")
    console = allows.get("console", {}).get("spec", {}).get("rules", [])
    opened = {path for rule in console for to in rule.get("to", []) for path in to["operation"].get("paths", [])}
    if not opened <= {"/console", "/console/", "/console/static/*", "/console/auth/login", "/console/auth/refresh",
                      *CONSOLE_DATA}:
        problems.append(f"the console is open on paths beyond its page, sign-in and data: {opened}")
    return problems


def test_authorization_policies_implement_the_access_model(overlay: list[dict[str, Any]]) -> None:
    problems = authorization_problems(overlay)
    assert not problems, "\n".join(problems)
    functions = checks.knative_services(overlay)
    labels = {d["spec"]["template"]["metadata"]["labels"]["knative-saga.dev/access"] for d in functions}
    assert labels == {"api", "auth", "events", "console"}


@pytest.mark.parametrize("break_it", ["deny-by-default", "api-require-jwt", "events-allow-eventing",
                                      "allow-knative-system", "saga-gateway-require-jwt", "console-allow-ingress",
                                      "console-require-jwt"])
def test_authorization_rules_fail_when_a_policy_is_missing_or_loose(overlay: Docs, break_it: str) -> None:
    broken = [d for d in copy.deepcopy(overlay) if d["metadata"]["name"] != break_it]
    assert authorization_problems(broken)


def test_authorization_rules_fail_when_anyone_may_send_events(overlay: list[dict[str, Any]]) -> None:
    broken = copy.deepcopy(overlay)
    named(broken, "AuthorizationPolicy", "events-allow-eventing")["spec"]["rules"][0]["from"][0]["source"][
        "namespaces"].append("default")
    assert authorization_problems(broken)
    broken = copy.deepcopy(overlay)
    named(broken, "AuthorizationPolicy", "events-allow-eventing")["spec"]["rules"][1]["from"][0]["source"][
        "principals"].append("cluster.local/ns/knative-saga/sa/default")
    assert authorization_problems(broken)


def test_authorization_rules_fail_when_the_console_opens_more_than_its_page(overlay: Docs) -> None:
    broken = copy.deepcopy(overlay)
    named(broken, "AuthorizationPolicy", "console-allow-ingress")["spec"]["rules"][0]["to"][0]["operation"][
        "paths"].append("/admin/sagas")
    assert authorization_problems(broken)


# Knative's queue-proxy serving ports (serving pkg/networking/constants.go: BackendHTTPPort, BackendHTTP2Port,
# BackendHTTPSPort) and knative-local-gateway's listeners on the gateway pods (net-istio config/203-local-gateway.yaml).
QUEUE_PROXY_PORTS = {8012, 8013, 8112}
LOCAL_GATEWAY_PORTS = {8081, 8444}


def test_deny_policies_name_the_ports_the_api_is_served_on(overlay: Docs) -> None:
    denies = [p for p in by_kind(overlay, "AuthorizationPolicy") if p["spec"].get("action") == "DENY"]
    assert {p["metadata"]["name"] for p in denies} == {"api-require-jwt", "console-require-jwt",
                                                       "saga-gateway-require-jwt"}
    problems = [p for doc in denies for p in checks.deny_port_rules(doc)]
    assert not problems, "\n".join(problems)

    def ports(policy: str) -> set[int]:
        return {int(port) for rule in named(overlay, "AuthorizationPolicy", policy)["spec"]["rules"]
                for to in rule["to"] for port in to["operation"]["ports"]}

    for access in ("api", "console"):
        served = [d for d in checks.knative_services(overlay)
                  if d["spec"]["template"]["metadata"]["labels"]["knative-saga.dev/access"] == access]
        container_ports = {p["containerPort"] for d in served for c in checks.containers(d) for p in c["ports"]}
        assert ports(f"{access}-require-jwt") == QUEUE_PROXY_PORTS | container_ports
    [operator] = checks.load_yaml(REPO / "istio" / "install" / "istio-kind.yaml")
    gateway = operator["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"]
    listeners = {p["targetPort"] for p in gateway if p["name"] in ("http2", "https")}
    assert ports("saga-gateway-require-jwt") == listeners | LOCAL_GATEWAY_PORTS


@pytest.mark.parametrize("break_it", ["drop-ports", "from-only"])
def test_deny_port_rules_fail_on_a_deny_rule_without_ports(overlay: Docs, break_it: str) -> None:
    policy = copy.deepcopy(named(overlay, "AuthorizationPolicy", "api-require-jwt"))
    rule = policy["spec"]["rules"][0]
    if break_it == "drop-ports":
        rule["to"][0]["operation"].pop("ports")
    else:
        rule.pop("to")
    assert checks.deny_port_rules(policy)
    rule["from"][0]["source"]["namespaces"] = ["default"]  # a TCP attribute: Istio can scope it without HTTP
    assert bool(checks.deny_port_rules(policy)) == (break_it == "drop-ports")


def route_for(virtual_service: dict[str, Any], path: str) -> str | None:
    """The Knative Service a request path is routed to (the rewritten authority's first label)."""
    for route in virtual_service["spec"]["http"]:
        for match in route["match"]:
            uri = match["uri"]
            if uri.get("exact") == path or ("prefix" in uri and path.startswith(uri["prefix"])):
                return str(route["rewrite"]["authority"]).split(".")[0]
    return None


def test_gateway_serves_the_contract_paths_on_one_host(overlay: list[dict[str, Any]]) -> None:
    gateway = named(overlay, "Gateway", "saga-gateway")
    service = named(overlay, "VirtualService", "saga-api")
    assert gateway["spec"]["servers"][0]["hosts"] == [VERSIONS["INGRESS_HOST"]] == service["spec"]["hosts"]
    expected = {"/orders": "order-api", "/orders/abc": "order-api", "/orders/abc/saga": "order-api",
                "/admin/sagas": "order-api", "/admin/sagas/abc/resume": "order-api", "/admin/other": None,
                "/goods/1": "goods-api", "/account/12223": "account-api", "/auth/register": "auth-api",
                "/auth/login": "auth-api", "/auth/refresh": "auth-api", "/.well-known/jwks.json": "auth-api",
                "/console": "console", "/console/": "console", "/console/api/sagas": "console",
                "/console/static/console.js": "console", "/consolex": None, "/healthz": None, "/ordersx": None}
    assert {path: route_for(service, path) for path in expected} == expected
    for route in service["spec"]["http"]:
        destination = route["route"][0]["destination"]
        assert destination["host"] == "knative-local-gateway.istio-system.svc.cluster.local"
        assert route["rewrite"]["authority"].endswith(".knative-saga.svc.cluster.local")
    functions = {d["metadata"]["name"]: d for d in checks.knative_services(overlay)}
    order_timeout = functions["order-api"]["spec"]["template"]["spec"]["timeoutSeconds"]
    assert named(overlay, "VirtualService", "saga-api")["spec"]["http"][0]["timeout"] == f"{order_timeout}s"


# --- kind, Istio install, versions -----------------------------------------------------------------

def test_kind_config_is_valid_and_matches_the_pins() -> None:
    [config] = checks.load_yaml(REPO / "kind-config.yaml")
    assert checks.jsonschema_errors(config, checks.KIND_SCHEMA, "kind-config.yaml") == []
    bad = copy.deepcopy(config)
    bad["nodes"][0]["extraPortMapping"] = []
    assert checks.jsonschema_errors(bad, checks.KIND_SCHEMA, "kind-config.yaml")
    node = config["nodes"][0]
    assert node["image"] == VERSIONS["KIND_NODE_IMAGE"] and "@sha256:" in node["image"]
    assert config["name"] == VERSIONS["CLUSTER_NAME"]
    mapped = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    [operator] = checks.load_yaml(REPO / "istio" / "install" / "istio-kind.yaml")
    assert checks.jsonschema_errors(operator, checks.ISTIO_OPERATOR_SCHEMA, "istio-kind.yaml") == []
    ports = {p["name"]: p for p in operator["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"]}
    assert mapped == {ports["http2"]["nodePort"]: 80, ports["https"]["nodePort"]: 443}
    assert str(mapped[ports["http2"]["nodePort"]]) == VERSIONS["INGRESS_HTTP_PORT"]
    assert 'config_path = "/etc/containerd/certs.d"' in config["containerdConfigPatches"][0]


def test_versions_are_pinned_in_one_place() -> None:
    expected = {"KIND_VERSION": r"v0\.31\.0", "KIND_NODE_IMAGE": r"kindest/node:v1\.35\.\d+@sha256:[0-9a-f]{64}",
                "KUBECTL_VERSION": r"v1\.35\.\d+", "ISTIO_VERSION": r"1\.29\.2",
                "KNATIVE_SERVING_VERSION": r"knative-v1\.22\.\d+", "KNATIVE_EVENTING_VERSION": r"knative-v1\.22\.\d+",
                "KNATIVE_NET_ISTIO_VERSION": r"knative-v1\.22\.\d+",
                "KNATIVE_KAFKA_BROKER_VERSION": r"knative-v1\.22\.\d+", "REGISTRY_IMAGE": r"registry:\d+\.\d+\.\d+"}
    for key, pattern in expected.items():
        assert re.fullmatch(pattern, VERSIONS[key]), (key, VERSIONS[key])
    scripts = "\n".join(path.read_text() for path in SCRIPTS)
    assert "latest" not in scripts and "/releases/latest" not in scripts
    for key in expected:
        assert f"${{{key}}}" in scripts, f"{key} is pinned but not used by any script"
    for url in re.findall(r"https://github\.com/\S+/releases/download/\S+", scripts):
        assert "${" in url, f"release URL without a pinned version: {url}"


# --- Dockerfile, scripts, Makefile ------------------------------------------------------------------

def test_dockerfile_is_pinned_non_root_and_lints_clean() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", dockerfile, re.M)
    assert bases and all(re.fullmatch(r"python:3\.11\.\d+-slim(@sha256:[0-9a-f]{64})?", b) for b in bases), bases
    assert re.search(r"^USER (?!root|0\b)\S+", dockerfile, re.M)
    # Exactly the locked packages, hash-checked: the runtime and the replay Job's, no test tool.
    assert re.search(r"^RUN \S*pip install --require-hashes --no-deps -r image.lock$", dockerfile, re.M)
    assert "pytest==" not in (REPO / "requirements" / "image.lock").read_text()
    assert all(s in dockerfile for s in ('--source \\"$FUNCTION_SOURCE\\"', '--target \\"$FUNCTION_TARGET\\"',
                                         "--host 0.0.0.0", '--port \\"$PORT\\"'))
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".local", ".git"} <= set(ignored)
    result = subprocess.run([checks.tool("hadolint"), "Dockerfile"], cwd=REPO, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run([checks.tool("hadolint"), "-"], input="FROM python:latest\nRUN cd /tmp\n",
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0


def test_scripts_are_strict_bash_and_shellcheck_clean() -> None:
    assert {p.name for p in SCRIPTS} >= {"kind-up.sh", "images.sh", "deploy.sh", "e2e.sh", "kind-down.sh"}
    for path in SCRIPTS:
        text = path.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), path
        if path.name != "lib.sh":  # sourced, not run
            assert "set -euo pipefail" in text and path.stat().st_mode & 0o111, path
    result = subprocess.run([checks.tool("shellcheck"), "-x", *map(str, SCRIPTS)], cwd=REPO, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run([checks.tool("shellcheck"), "-s", "bash", "-"], input="rm -rf $dir/*\n",
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode != 0


def test_secrets_are_generated_at_deploy_time_and_never_kept() -> None:
    deploy = (REPO / "scripts" / "cluster" / "deploy.sh").read_text()
    assert "openssl genpkey -algorithm RSA" in deploy and "openssl rand" in deploy
    assert re.search(r'mktemp -d\)"\ntrap \'rm -rf "\$\{secrets_dir\}"\' EXIT', deploy)
    assert deploy.count("--dry-run=client -o yaml | k apply -f -") == 1  # apply_secret, used for both
    assert "--from-literal" not in deploy  # a secret on a command line shows in `ps`
    gitignore = (REPO / ".gitignore").read_text().split()
    assert ".local/" in gitignore  # image.env and the rendered wrapper live there


# Run as a child of `make manifests-check` too: without the parent's flags, what `make -n` prints is
# exactly the commands.
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES")}

MAKE_TARGETS = {
    "kind-up": ["scripts/cluster/kind-up.sh"],
    "images": ["scripts/cluster/images.sh"],
    "deploy": ["scripts/cluster/images.sh", "scripts/cluster/deploy.sh"],
    "e2e-kind": ["scripts/cluster/e2e.sh"],
    "replay": ["scripts/cluster/replay.sh"],
    "kind-down": ["scripts/cluster/kind-down.sh"],
    "manifests-check": [".venv/bin/pytest tests/manifests"],
}


@pytest.mark.parametrize("target", sorted(MAKE_TARGETS))
def test_make_targets_run_the_expected_commands(target: str) -> None:
    make = checks.tool("make")
    result = subprocess.run([make, "-n", "--no-print-directory", "-f", "mk/cluster.mk", target], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False, env=MAKE_ENV)
    assert result.returncode == 0, result.stderr
    commands = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert commands == MAKE_TARGETS[target]
    for command in commands:
        script = REPO / command.split()[0]
        assert script.exists() and script.stat().st_mode & 0o111, script


def test_make_dry_run_fails_for_an_unknown_target() -> None:
    result = subprocess.run([checks.tool("make"), "-n", "-f", "mk/cluster.mk", "kind-upp"], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False, env=MAKE_ENV)
    assert result.returncode != 0

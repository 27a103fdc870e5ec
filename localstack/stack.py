"""The whole local stack from the `knative/` manifests: topics, schemas, secrets, the gateway
(activators, broker ingress, PingSources) and the dispatcher process."""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

from localstack.gateway import Function, Gateway
from localstack.infra import Infra
from localstack.manifests import ManifestError, Manifests, ServiceSpec, load
from localstack.process import Child, start_child, wait_until
from saga.eventing.topology import Topology, Trigger

log = logging.getLogger(__name__)

INGRESS_PORT = 8090
DISPATCHER_METRICS_PORT = 8089  # the dispatcher's /metrics (consumer lag per Trigger, dead letters)
FIRST_INTERNAL_PORT = 8100  # Services without a contract port
TOPOLOGY_FILE = "topology.json"  # the broker's routing, for the dispatcher and `saga replay`
PUBLIC_NAMES = {"order-api": "order", "goods-api": "goods", "account-api": "account", "auth-api": "auth",
                "console": "console"}
_CLUSTER_URL = re.compile(r"http://([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local")


def ping_interval(schedule: str) -> float:
    """Seconds between pings for the cron forms the manifests use: `* * * * *` and `*/N * * * *`."""
    fields = schedule.split()
    if len(fields) == 5 and fields[1:] == ["*"] * 4:
        if fields[0] == "*":
            return 60.0
        if fields[0].startswith("*/") and fields[0][2:].isdigit():
            return 60.0 * int(fields[0][2:])
    raise ManifestError(f"PingSource schedule {schedule!r} is not supported locally")


class Stack:
    def __init__(self, repo: Path, root: Path, infra: Infra, *, port_offset: int = 0, idle_seconds: float = 60.0,
                 keep_warm: bool = False, ping_every: float | None = None, kafka_suffix: str = "",
                 env: Mapping[str, str] | None = None) -> None:
        """`kafka_suffix` names a throwaway stack's topics and consumer groups apart from others on the
        same Kafka (tests run several), and makes the stack delete its topics when it stops. `env` is
        set in every function's environment over the manifests' (say, a short step timeout)."""
        self.repo = repo
        self.root = root
        self.infra = infra
        self.port_offset = port_offset
        self.idle_seconds = idle_seconds
        self.keep_warm = keep_warm
        self.ping_every = ping_every
        self.kafka_suffix = kafka_suffix
        self.env = dict(env or {})
        self.manifests: Manifests = load(repo / "knative")
        self.ports = self._assign_ports()
        self.ingress_url = (
            f"http://127.0.0.1:{INGRESS_PORT + port_offset}/{self.manifests.namespace}/{self.manifests.broker}"
        )
        self.gateway: Gateway | None = None
        self.dispatcher: Child | None = None
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_dispatcher, name="dispatcher-watch", daemon=True)

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def public_urls(self) -> dict[str, str]:
        return {short: self.url(name) for name, short in PUBLIC_NAMES.items()}

    @property
    def dispatcher_metrics_port(self) -> int:
        return DISPATCHER_METRICS_PORT + self.port_offset

    @property
    def dispatcher_pid(self) -> int | None:
        return self.dispatcher.pid if self.dispatcher is not None else None

    def _assign_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        internal = FIRST_INTERNAL_PORT + self.port_offset
        for name, service in sorted(self.manifests.services.items()):
            if service.local_port is not None:
                ports[name] = service.local_port + self.port_offset
            else:
                ports[name] = internal
                internal += 1
        return ports

    # --- start ---
    def __enter__(self) -> Stack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        from functions.schemas import init_databases

        self._create_topics()
        init_databases(self.infra.database_url, seed_dev=True)
        from localstack.secrets import local_secrets

        secrets = local_secrets(self.root, self.infra.database_url)
        functions = {
            name: self._function(service, secrets) for name, service in sorted(self.manifests.services.items())
        }
        self.gateway = Gateway(
            functions, idle_seconds=self.idle_seconds, keep_warm=self.keep_warm,
            kafka_bootstrap=self.infra.kafka_bootstrap, broker_topic=self.topology.topic,
            ingress_port=INGRESS_PORT + self.port_offset,
            ingress_path=f"/{self.manifests.namespace}/{self.manifests.broker}",
        )
        pings = [
            (f"/apis/v1/namespaces/{p.namespace}/pingsources/{p.name}", self.ping_every or ping_interval(p.schedule),
             self.url(p.sink), p.data, p.content_type)
            for p in self.manifests.pings
        ]
        self.gateway.start(pings)
        self._start_dispatcher()
        self._watcher.start()

    def _create_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.infra.kafka_bootstrap, "log_level": 3})
        wanted = {self.topology.topic: self.manifests.partitions}
        wanted.update({t + self.kafka_suffix: n for t, n in self.manifests.dead_letter_topics.items()})
        existing = admin.list_topics(timeout=20).topics
        missing = [NewTopic(t, p, 1) for t, p in wanted.items() if t not in existing]
        for topic, future in (admin.create_topics(missing) if missing else {}).items():
            try:
                future.result(timeout=30)
            except Exception as exc:  # created concurrently by another stack: fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
            log.info("created topic %s", topic)

    def _function(self, service: ServiceSpec, secrets: dict[str, dict[str, str]]) -> Function:
        env = dict(os.environ)
        for var in service.env:
            if var.secret is not None:
                name, key = var.secret
                env[var.name] = secrets[name][key]
            else:
                env[var.name] = self._localise(var.value or "")
        port = self.ports[service.name]
        # No ingress gateway stands in front of the functions here (in a cluster Istio's appends its
        # caller to X-Forwarded-For, and auth-api trusts that one entry): the peer is the caller.
        env["SAGA_TRUSTED_PROXY_HOPS"] = "0"
        # The broker's routing, where `saga replay` reads it here (a cluster's console asks the API server).
        env["SAGA_REPLAY_TOPOLOGY"] = str(self.topology_file)
        env.update(self.env)
        env.update({"PORT": str(port), "K_SERVICE": service.name})
        if service.name in self.manifests.bound_to_broker:
            env["K_SINK"] = self.ingress_url
        source = service.env_value("FUNCTION_SOURCE") or ""
        target = service.env_value("FUNCTION_TARGET") or ""
        # The image's command (Dockerfile): functions-framework's ASGI app served by uvicorn.
        argv = [sys.executable, "-m", "functions.platform.serve", "--source", source, "--target", target,
                "--host", "127.0.0.1", "--port", str(port)]
        return Function(
            name=service.name, port=port, argv=argv, env=env,
            log_file=self.root / "logs" / f"{service.name}.log", cwd=self.repo,
        )

    def _localise(self, value: str) -> str:
        """Cluster-local Service URLs point at the same Service's local port."""
        def local(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.ports:
                raise ManifestError(f"{value!r} names Service {name!r}, which the manifests do not define")
            return self.url(name)

        return _CLUSTER_URL.sub(local, value)

    @property
    def topology(self) -> Topology:
        """The broker's routing with subscribers resolved to this stack's ports (what `saga replay` reads)."""
        suffix = self.kafka_suffix
        return Topology(
            bootstrap=self.infra.kafka_bootstrap,
            topic=self.manifests.broker_topic + suffix,
            triggers=tuple(
                Trigger(
                    name=t.name, group=t.consumer_group + suffix, filter=t.filter, url=self.url(t.subscriber),
                    delivery=replace(t.delivery, dead_letter_topic=t.delivery.dead_letter_topic
                                     and t.delivery.dead_letter_topic + suffix),
                    ordered=t.ordered,
                )
                for t in self.manifests.triggers
            ),
            dead_letter_topics=tuple(sorted(t + suffix for t in self.manifests.dead_letter_topics)),
        )

    @property
    def topology_file(self) -> Path:
        return self.root / TOPOLOGY_FILE

    def redeploy(self, service: str, source: str | None = None, target: str | None = None, *,
                 env: Mapping[str, str] | None = None) -> None:
        """Roll `service` to other code (FUNCTION_SOURCE/FUNCTION_TARGET), or back to the manifests' with
        no arguments: a new revision, as `kubectl apply` of a changed Service would make. `env`
        changes its environment from this revision on (say, a rotated Secret)."""
        spec = self.manifests.services[service]
        assert self.gateway is not None
        if env is not None:
            self.gateway.functions[service].env.update(env)
        argv = list(self.gateway.functions[service].argv)
        argv[argv.index("--source") + 1] = source or spec.env_value("FUNCTION_SOURCE") or ""
        argv[argv.index("--target") + 1] = target or spec.env_value("FUNCTION_TARGET") or ""
        self.gateway.redeploy(service, argv)

    def _start_dispatcher(self) -> None:
        topology_file = self.topology_file
        ready = self.root / "dispatcher.ready"
        ready.unlink(missing_ok=True)
        self.topology.dump(topology_file)
        self.dispatcher = start_child(
            "dispatcher", [sys.executable, "-m", "localstack.dispatcher", str(topology_file), str(ready)],
            self.root / "logs" / "dispatcher.log", cwd=self.repo,
            env={**os.environ, "DISPATCHER_METRICS_PORT": str(self.dispatcher_metrics_port)},
        )
        wait_until(ready.exists, timeout=90, what="the dispatcher's consumer groups", alive=self.dispatcher)

    def _watch_dispatcher(self) -> None:
        """Restart the dispatcher if it dies (as Kubernetes would restart its pod)."""
        while not self._watch_stop.wait(1.0):
            if self.dispatcher is not None and not self.dispatcher.alive():
                log.warning("dispatcher (pid %s) exited; restarting it", self.dispatcher.pid)
                try:
                    self._start_dispatcher()
                except Exception:
                    log.exception("dispatcher restart failed; trying again")
                    time.sleep(1.0)

    # --- stop ---
    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._watch_stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=10)
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.gateway is not None:
            self.gateway.stop()
        if self.kafka_suffix:
            self._delete_topics()

    def _delete_topics(self) -> None:
        admin = AdminClient({"bootstrap.servers": self.infra.kafka_bootstrap, "log_level": 3})
        topics = [self.topology.topic, *self.topology.dead_letter_topics]
        for topic, future in admin.delete_topics(topics, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except Exception as exc:
                log.warning("could not delete topic %s: %s", topic, exc)

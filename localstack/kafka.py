"""A single-node Apache Kafka in KRaft mode (broker and controller in one JVM), owned by the project.

The jars come from Maven Central through `localstack/kafka/pom.xml`; the data lives under the
stack's root. Settings favour latency on one machine: no initial rebalance delay, replication 1.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import uuid
from pathlib import Path

from localstack.process import Child, port_open, start_child, wait_until

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.3.1"
_POM = Path(__file__).parent / "kafka" / "pom.xml"
_CLUSTER_ID_FILE = "cluster-id"


def libs_dir(repo: Path) -> Path:
    return repo / ".local" / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_installed(repo: Path) -> Path:
    """Download the broker's jars once (idempotent: a complete libs folder is reused)."""
    return maven_jars(_POM, libs_dir(repo))


def maven_jars(pom: Path, libs: Path) -> Path:
    """The runtime jars `pom` names, from Maven Central into `libs`, once (a complete folder is reused)."""
    done = libs / ".complete"
    if done.exists():
        return libs
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise RuntimeError("Kafka needs Java 17+ and Maven: apt-get install -y openjdk-17-jdk-headless maven")
    log.info("downloading the jars of %s from Maven Central into %s", pom, libs)
    partial = libs.with_name(libs.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
        check=True,
    )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    done.touch()
    return libs


def _server_properties(data: Path, port: int) -> str:
    controller = port + 1
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data / 'logs'}",
            # One broker: every internal topic has one replica, transactions need only that one.
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=8",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=8",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Consumer groups start delivering at once instead of waiting 3 s for more members.
            "group.initial.rebalance.delay.ms=0",
            # Topics are created by the stack from the manifests, never by a typo.
            "auto.create.topics.enable=false",
            "num.partitions=8",
            "log.retention.hours=168",
        ]
    ) + "\n"


_LOG4J2 = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: file
    Logger:
      - name: kafka
        level: WARN
      - name: org.apache.kafka
        level: WARN
"""


class KafkaServer:
    """Start/stop one broker whose data lives in `root` (created and formatted on first start)."""

    def __init__(self, repo: Path, root: Path, port: int) -> None:
        self.repo = repo
        self.root = root
        self.port = port
        self._child: Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        libs = ensure_installed(self.repo)
        self.root.mkdir(parents=True, exist_ok=True)
        properties = self.root / "server.properties"
        properties.write_text(_server_properties(self.root, self.port))
        log4j = self.root / "log4j2.yaml"
        log4j.write_text(_LOG4J2.format(log=self.root / "server.log"))
        java = ["java", "-Xms256m", "-Xmx512m", "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={log4j}",
                "-cp", f"{libs}/*"]
        cluster_id = self.root / _CLUSTER_ID_FILE
        if not (self.root / "logs" / "meta.properties").exists():
            # Formatting is what `kafka-storage format` does; done once per data folder.
            cluster_id.write_text(_kafka_uuid())
            subprocess.run(
                [*java, "kafka.tools.StorageTool", "format", "--config", str(properties),
                 "--cluster-id", cluster_id.read_text().strip(), "--ignore-formatted"],
                check=True, stdout=subprocess.DEVNULL,
            )
        self._child = start_child("kafka", [*java, "kafka.Kafka", str(properties)], self.root / "stdout.log")
        wait_until(self._ready, timeout=timeout, what=f"Kafka on {self.bootstrap}", alive=self._child)

    def _ready(self) -> bool:
        # Cheap socket probe first: a Kafka client polled against a closed port floods the log.
        if not port_open(self.port):
            return False
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=5)
        except Exception:
            return False
        return True

    def crash(self) -> None:
        """SIGKILL: no controlled shutdown, log recovery at the next start. For the fault-injection run."""
        if self._child is not None:
            self._child.kill()
            self._child = None

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop(grace=30.0)
            self._child = None


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as `random-uuid`)."""
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

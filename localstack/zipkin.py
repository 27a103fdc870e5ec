"""Zipkin, the trace viewer of `saga dev --tracing`: the server's executable jar (Spring Boot, the Lens UI
built in) from Maven Central, fetched with Maven as Kafka's jars are and cached under `.local/zipkin/`,
run with in-memory storage on one port of 127.0.0.1. The functions send it their spans through its JSON
API (`OTEL_EXPORTER_ZIPKIN_ENDPOINT`, read by `saga/tracing.py`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from localstack.process import Child, start_child, wait_until

log = logging.getLogger(__name__)

ZIPKIN_VERSION = "3.6.1"  # the one pin: the cached jar's name carries it, so a new pin downloads anew
ZIPKIN_ARTIFACT = f"io.zipkin:zipkin-server:{ZIPKIN_VERSION}:jar:exec"  # group:artifact:version:type:classifier
# Zipkin's own port: the span collector, the query API and the UI all on it. Clear of the stack's
# 8080-8140, Kafka's 19092/19093 and PostgreSQL's 55432, and below the ephemeral range.
ZIPKIN_PORT = 9411
LOOPBACK = "127.0.0.1"
HEAP = "256m"
# In-memory storage drops the oldest traces past this many spans. Zipkin's default (500,000) outgrows a
# 256 MiB heap; an order's saga is 5 to 10 spans, so this keeps the last few thousand orders.
MAX_SPANS = 50_000
# What the JVM needs from our environment; nothing else is passed on (see `server_environment`).
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "JAVA_HOME")


def jar_path(repo: Path) -> Path:
    return repo / ".local" / "zipkin" / f"zipkin-server-{ZIPKIN_VERSION}-exec.jar"


def ensure_downloaded(repo: Path) -> Path:
    """The server's jar, downloaded from Maven Central once (about 135 MB); a cached one is reused."""
    jar = jar_path(repo)
    if jar.exists():
        return jar
    if shutil.which("java") is None or shutil.which("mvn") is None:
        raise RuntimeError("Zipkin needs Java 17+ and Maven: apt-get install -y openjdk-17-jdk-headless maven")
    log.info("downloading Zipkin %s from Maven Central, once (about 135 MB) into %s", ZIPKIN_VERSION, jar)
    started = time.monotonic()
    # Maven writes into a folder of its own, renamed into place when complete: a broken download is never reused.
    partial = jar.with_name(jar.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(
        # -C: fail on a checksum mismatch instead of warning. Run in the empty folder: no project pom around.
        ["mvn", "-q", "-B", "-C", "dependency:copy", f"-Dartifact={ZIPKIN_ARTIFACT}", f"-DoutputDirectory={partial}"],
        check=True, cwd=partial,
    )
    (partial / jar.name).rename(jar)
    shutil.rmtree(partial)
    log.info("downloaded Zipkin %s in %.0f s", ZIPKIN_VERSION, time.monotonic() - started)
    return jar


def server_command(jar: Path, port: int) -> list[str]:
    """`java -jar` with one HTTP listener on loopback: Zipkin has no setting for its address (`QUERY_PORT`
    only), so Armeria's port list is given whole (Spring replaces a list, never merges one)."""
    return [
        # C1 only and the serial collector: a third of the start-up time (6 to 10 s instead of 20 on the loaded 2-core
        # machine) and fewer threads beside the stack's; a viewer for one developer needs no peak throughput.
        "java", f"-Xmx{HEAP}", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
        "-jar", str(jar),
        f"--armeria.ports[0].ip={LOOPBACK}", f"--armeria.ports[0].port={port}", "--armeria.ports[0].protocols[0]=http",
    ]


def server_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """Zipkin's settings, over only the basics of `inherited`: Zipkin reads plain names such as
    KAFKA_BOOTSTRAP_SERVERS, RABBIT_URI or ES_HOSTS, and one of those set for the stack would make it
    collect from our Kafka or store elsewhere."""
    return {
        **{name: inherited[name] for name in _INHERITED if name in inherited},
        "STORAGE_TYPE": "mem",
        "MEM_MAX_SPANS": str(MAX_SPANS),
        "SELF_TRACING_ENABLED": "false",  # its own API calls would fill the UI with a "zipkin-server" service
    }


class ZipkinServer:
    """Start/stop one Zipkin for a stack whose logs live in `root/logs`."""

    def __init__(self, repo: Path, root: Path, *, port_offset: int = 0) -> None:
        self.repo = repo
        self.root = root
        self.port = ZIPKIN_PORT + port_offset
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def spans_endpoint(self) -> str:
        """What `OTEL_EXPORTER_ZIPKIN_ENDPOINT` names: Zipkin's JSON v2 collector."""
        return f"{self.url}/api/v2/spans"

    @property
    def ui_url(self) -> str:
        return f"{self.url}/zipkin/"

    @property
    def trace_url_template(self) -> str:
        """A trace's page in the UI (Lens routes `/traces/:traceId` under `/zipkin`), `{traceId}` to fill in."""
        return f"{self.url}/zipkin/traces/{{traceId}}"

    @property
    def pid(self) -> int | None:
        """The server's pid, when this object started it (None when it reuses one already running)."""
        return self._child.pid if self._child is not None else None

    def __enter__(self) -> ZipkinServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        if self._ready():
            # As with Kafka and PostgreSQL: one left by a killed stack is reused, and left running on exit.
            log.info("Zipkin already answers on %s: reusing it", self.url)
            return
        jar = ensure_downloaded(self.repo)
        started = time.monotonic()
        self._child = start_child("zipkin", server_command(jar, self.port), self.root / "logs" / "zipkin.log",
                                  env=server_environment(os.environ))
        # Spring Boot takes several seconds before it listens (6 to 10 on the loaded 2-core machine).
        wait_until(self._ready, timeout=timeout, what=f"Zipkin on {self.url}", alive=self._child, interval=0.25)
        log.info("Zipkin %s (pid %s) ready in %.1f s: UI %s", ZIPKIN_VERSION, self._child.pid,
                 time.monotonic() - started, self.ui_url)

    def _ready(self) -> bool:
        """Zipkin's health check answers UP (its storage included), not just some server on the port."""
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2.0) as response:
                return bool(json.load(response).get("status") == "UP")
        except (OSError, ValueError):  # refused, an error status (HTTPError is an OSError), or not JSON
            return False

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

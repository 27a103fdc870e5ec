"""A PostgreSQL cluster owned by the project: Debian's server binaries, data under the stack's root,
listening on 127.0.0.1 only, with role and database `saga`.

PostgreSQL refuses to run as root, so when the stack runs as root the server runs as the `postgres`
OS user (created by Debian's package). If that user cannot reach the repo's folder (a clone under a
private directory), the data goes to /var/tmp/knative-saga/<hash> instead, and the log says so.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import pwd
import subprocess
from pathlib import Path

from localstack.process import Child, start_child, wait_until

log = logging.getLogger(__name__)

ROLE = DATABASE = PASSWORD = "saga"  # a dev credential, on 127.0.0.1 only; documented in the README


def server_bin() -> Path:
    """The newest installed server's bin folder; installs Debian's `postgresql` when there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        if os.geteuid() != 0:
            raise RuntimeError("PostgreSQL is not installed: run `sudo apt-get install -y postgresql`")
        log.info("installing PostgreSQL from Debian's packages")
        subprocess.run(["apt-get", "update", "-q"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        return server_bin()
    return Path(found[-1]).parent


def _run_as() -> str | None:
    """The OS user the server runs as: `postgres` when we are root, else ourselves."""
    return "postgres" if os.geteuid() == 0 else None


def _reachable_by(user: str, path: Path) -> bool:
    probe = subprocess.run(["runuser", "-u", user, "--", "test", "-x", str(path)], check=False)
    return probe.returncode == 0


class PostgresServer:
    def __init__(self, root: Path, port: int) -> None:
        self.port = port
        self.data = root / "pgdata"
        self._child: Child | None = None
        user = _run_as()
        root.mkdir(parents=True, exist_ok=True)
        if user is not None and not _reachable_by(user, root):
            digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
            self.data = Path("/var/tmp/knative-saga") / digest / "pgdata"
            log.warning("user %s cannot reach %s; PostgreSQL data goes to %s", user, root, self.data)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self, timeout: float = 60.0) -> None:
        bin_dir = server_bin()
        user = _run_as()
        self.data.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        os.chmod(self.data, 0o700)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--locale=C.UTF-8"],
                check=True, user=user, stdout=subprocess.DEVNULL,
            )
        argv = [
            str(bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.data}",
            # Every function process keeps a small pool; the dispatcher and tests add more.
            "-c", "max_connections=300", "-c", "shared_buffers=256MB",
            # Statement counts and times for `make bench` (docs/performance.md); negligible overhead.
            "-c", "shared_preload_libraries=pg_stat_statements",
        ]
        self._child = start_child("postgres", argv, self.data.parent / "postgres.log", user=user)
        wait_until(self._accepting, timeout=timeout, what=f"PostgreSQL on 127.0.0.1:{self.port}", alive=self._child)
        self._ensure_role_and_database()

    def _accepting(self) -> bool:
        probe = subprocess.run(
            [str(server_bin() / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)], check=False
        )
        return probe.returncode == 0

    def _psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(server_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database,
             "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            check=True, capture_output=True, text=True,
        )
        return done.stdout.strip()

    def _ensure_role_and_database(self) -> None:
        if not self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
            self._psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}' CREATEDB")
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): no checkpoint, crash recovery at the next start, as after a
        power cut (`pg_ctl stop -m immediate`). For the fault-injection run."""
        if self._child is not None:
            self._child.popen.send_signal(3)
            self._child.popen.wait(timeout=30)
            self._child = None

    def stop(self) -> None:
        if self._child is not None:
            # SIGTERM is PostgreSQL's "smart" shutdown, which waits for clients; SIGINT is "fast".
            self._child.popen.send_signal(2)
            self._child.stop(grace=30.0)
            self._child = None


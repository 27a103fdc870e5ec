"""Child processes the stack starts: started with their output in a log file, stopped by their
own pid (SIGTERM, then SIGKILL after a bounded wait), never by name; readiness waits are bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class Child:
    def __init__(self, name: str, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.popen = popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no cleanup in the child."""
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)

    def kill_group(self, timeout: float = 10.0) -> None:
        """SIGKILL to the child and everything it forked (its own session: the group is its pid);
        returns when all of them are gone (a forked worker can outlive its parent for a moment,
        holding the listening socket it inherited)."""
        if not self.alive():
            return
        os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(timeout=timeout)
        wait_until(lambda: not _group_running(self.pid), timeout=timeout, interval=0.005,
                   what=f"the end of process group {self.pid} ({self.name})")


def _group_running(group: int) -> bool:
    """Whether a process of `group` still runs (zombies, whose files are closed, do not count)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":  # after the name: state, ppid, pgrp
            return True
    return False


def start_child(
    name: str, argv: Sequence[str], log_file: Path, *, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, user: str | None = None, pass_fds: Sequence[int] = (),
) -> Child:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, user=user, pass_fds=tuple(pass_fds),
            # Own process group: Ctrl-C in the terminal reaches the stack, which stops children in order.
            start_new_session=True,
        )
    return Child(name, popen)


def wait_until(
    ready: Callable[[], bool], *, timeout: float, what: str, alive: Child | None = None, interval: float = 0.1
) -> None:
    """Poll `ready` until it is true; fail after `timeout` seconds or if `alive` dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if alive is not None and not alive.alive():
            raise RuntimeError(f"{what}: process {alive.name} (pid {alive.pid}) exited with {alive.popen.returncode}")
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0

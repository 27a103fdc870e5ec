"""What the kernel knows of TCP connections (iproute2's `ss`, which reads every socket's tcp_info):
how many data segments each one carried, when it last carried data. The benchmark counts round
trips to PostgreSQL and requests to Kafka with it, on the servers' side."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_FIELD = re.compile(r"\b(lastsnd|lastrcv|data_segs_in|data_segs_out):(\d+)")
_PID = re.compile(r"pid=(\d+)")


@dataclass(frozen=True)
class Connection:
    local: str  # address:port
    peer: str
    counters: dict[str, int]  # lastsnd, lastrcv (ms ago), data_segs_in, data_segs_out
    pids: tuple[int, ...]  # the processes holding the socket (only when asked for)

    @property
    def local_port(self) -> int:
        return int(self.local.rsplit(":", 1)[1])


def established(expression: str, *, processes: bool = False) -> list[Connection] | None:
    """The established TCP connections matching an ss filter (`( sport = :8080 )`); None when ss
    is not there."""
    argv = ["ss", "-tinH", *(["-p"] if processes else []), "state", "established", expression]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found: list[list[str]] = []
    for line in out.splitlines():
        if line[:1].isspace() and found:
            found[-1][2] += " " + line.strip()  # tcp_info comes on the following, indented line
        elif line.strip():
            columns = line.split()  # with a state filter: Recv-Q Send-Q Local Peer [Process]
            found.append([columns[2], columns[3], " ".join(columns[4:])])
    return [
        Connection(local, peer, {k: int(v) for k, v in _FIELD.findall(details)},
                   tuple(int(p) for p in _PID.findall(details)))
        for local, peer, details in found
    ]


def on_ports(ports: list[int], *, local: bool = True) -> str:
    """An ss filter for connections whose local (or remote) port is one of `ports`."""
    side = "sport" if local else "dport"
    return "( " + " or ".join(f"{side} = :{port}" for port in ports) + " )"

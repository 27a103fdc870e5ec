"""What the benchmark reads from the machine: CPU and memory of the stack's processes (/proc), the
records written to Kafka, PostgreSQL's statement counters (pg_stat_statements), and the round trips
to PostgreSQL and requests to Kafka on the servers' sockets (iproute2's ss)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from confluent_kafka import Consumer, TopicPartition

from bench import sockets

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


# --- processes ---
def _stat(pid: int) -> list[str] | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from `state` on (the name may hold spaces)


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in (PROC / str(pid) / "task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """CPU of a process tree: its own, its reaped children's (cutime/cstime), and its live
    descendants' (PostgreSQL forks a backend per connection; gunicorn a worker). `tree=False`:
    the process's own only (the benchmark's host process also parents the stack)."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    # Counting from `state` (stat field 3): utime, stime, cutime, cstime are fields 14-17.
    if not tree:
        return sum(int(v) for v in fields[11:13]) / TICKS
    own = sum(int(v) for v in fields[11:15]) / TICKS
    return own + sum(cpu_seconds(child) for child in children(pid))


def memory_kib(pid: int) -> dict[str, int]:
    """Resident (RSS) and proportional (PSS: shared pages split among sharers) memory, in KiB."""
    found = {"rss": 0, "pss": 0}
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                found[key.lower()] = int(value.split()[0])
    except OSError:
        pass
    return found


def listening_pid(port: int) -> int | None:
    """The process listening on 127.0.0.1:`port` (the benchmark may reuse servers it did not start)."""
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    if not inodes:
        return None
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return _tree_root(int(entry.name), inodes)
        except OSError:
            continue
    return None


def _tree_root(pid: int, inodes: set[str]) -> int:
    """Listening sockets are inherited by forks (PostgreSQL's backends): go up to the first holder."""
    fields = _stat(pid)
    parent = int(fields[1]) if fields else 0
    if parent > 1:
        try:
            for fd in (PROC / str(parent) / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return _tree_root(parent, inodes)
        except OSError:
            pass
    return pid


@dataclass
class CpuMeter:
    """CPU seconds per named process tree between start() and stop()."""

    pids: Mapping[str, int]
    own_only: frozenset[str] = frozenset()  # names measured without their children

    def __post_init__(self) -> None:
        self.before: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(pid, tree=name not in self.own_only) for name, pid in self.pids.items()}

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        return {name: now - self.before.get(name, 0.0) for name, now in self._read().items()}


# --- Kafka ---
def end_offsets(bootstrap: str, topics: list[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "knative-saga-bench-probe", "log_level": 3})
    try:
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                ends[(topic, partition)] = high
        return ends
    finally:
        consumer.close()


def records_between(bootstrap: str, start: Mapping[tuple[str, int], int], end: Mapping[tuple[str, int], int],
                    timeout: float = 60.0) -> int:
    """Committed records between two sets of end offsets; transaction markers take offsets but
    are not records, so the offsets alone would overcount."""
    wanted = {tp: (start.get(tp, 0), high) for tp, high in end.items() if high > start.get(tp, 0)}
    if not wanted:
        return 0
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "knative-saga-bench-probe", "enable.auto.commit": False,
        "isolation.level": "read_committed", "log_level": 3,
    })
    try:
        consumer.assign([TopicPartition(t, p, low) for (t, p), (low, _) in wanted.items()])
        count = 0
        remaining = dict(wanted)
        deadline = time.monotonic() + timeout
        while remaining and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                if message.error() is not None:
                    continue
                tp = (message.topic() or "", message.partition() or 0)
                offset = message.offset() or 0
                if tp in remaining and offset < remaining[tp][1]:
                    count += 1
                if tp in remaining and offset >= remaining[tp][1] - 1:
                    del remaining[tp]
            for tp in list(remaining):  # the last offsets may be markers: done when the position passed them
                position = consumer.position([TopicPartition(tp[0], tp[1])])[0].offset
                if position >= remaining[tp][1]:
                    del remaining[tp]
        return count
    finally:
        consumer.close()


# --- PostgreSQL ---
@dataclass(frozen=True)
class Statement:
    query: str
    calls: int
    total_ms: float


def statements(admin: sa.Engine, database: str) -> dict[str, Statement] | None:
    """pg_stat_statements for one database, by query id; None when the server does not load it."""
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
            conn.commit()
            rows = conn.execute(sa.text(
                "SELECT queryid::text AS id, query, calls, total_exec_time FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = :db"
            ), {"db": database}).all()
    except sa.exc.DBAPIError:
        return None
    return {row.id: Statement(row.query, row.calls, row.total_exec_time) for row in rows}


def statements_between(before: Mapping[str, Statement], after: Mapping[str, Statement]) -> Iterator[Statement]:
    for key, now in after.items():
        then = before.get(key)
        calls = now.calls - (then.calls if then else 0)
        if calls > 0:
            yield Statement(now.query, calls, now.total_ms - (then.total_ms if then else 0.0))


# --- round trips on the wire ---
def server_segments(port: int, field: str, *, not_from_pid: int | None = None) -> dict[str, int] | None:
    """Per client connection to 127.0.0.1:`port`: TCP data segments the server side sent
    (`data_segs_out`: one per answer PostgreSQL flushes, a round trip) or received (`data_segs_in`:
    one per request a Kafka client writes). Connections opened by `not_from_pid` are left out."""
    served = sockets.established(sockets.on_ports([port]))
    if served is None:
        return None
    excluded = set()
    if not_from_pid is not None:
        clients = sockets.established(sockets.on_ports([port], local=False), processes=True) or []
        excluded = {c.local for c in clients if not_from_pid in c.pids}
    return {c.peer: c.counters[field] for c in served if c.peer not in excluded and field in c.counters}


@dataclass
class WireMeter:
    """Round trips to PostgreSQL and requests to Kafka between start() and stop(), counted on the
    servers' sockets: so every client counts, whatever library it uses, and pipelined statements
    count as the one round trip they are."""

    postgres_port: int
    kafka_port: int

    def _read(self) -> tuple[dict[str, int] | None, dict[str, int] | None]:
        # The benchmark's own queries (the quiet-period checks) are not the system's.
        return (server_segments(self.postgres_port, "data_segs_out", not_from_pid=os.getpid()),
                server_segments(self.kafka_port, "data_segs_in"))

    def start(self) -> None:
        self.before = self._read()

    def stop(self) -> dict[str, int | None]:
        after = self._read()
        totals: dict[str, int | None] = {}
        for name, then, now in zip(("postgres_round_trips", "kafka_requests"), self.before, after, strict=True):
            # A connection opened during the phase counts from zero; one closed during it is lost
            # (the stack's pools and clients live across phases).
            totals[name] = None if then is None or now is None else sum(
                max(count - then.get(peer, 0), 0) for peer, count in now.items())
        return totals

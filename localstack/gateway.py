"""The request path of the local stack, on one asyncio loop: the activator in front of each function
while it is scaled to zero (start on first request, stop when idle), the broker ingress (K_SINK:
CloudEvents in, Kafka records out through an idempotent producer), and the PingSources.

Each Service's port is one listening socket, bound here once. While the function is scaled to zero
the activator accepts on it; on the first request it stops accepting and starts the function with
that socket as its listener (systemd socket activation, which the function runtime understands:
functions/platform/serve.py), forwards the requests it holds, and is off the path from then on:
every later connection is accepted by the function itself, as Knative routes to a revision's pods
once it has capacity (`target-burst-capacity: "0"`). The function counts the requests it serves in a shared
file (functions/platform/activity.py, as queue-proxy counts them for Knative's autoscaler); one with
none in flight and none started for `idle_seconds` is scaled to zero and its socket taken back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException

from functions.platform.activity import ENV as ACTIVITY_ENV
from functions.platform.activity import Counts
from localstack.process import Child, start_child
from localstack.producer import AsyncProducer
from saga.eventing.binding import InvalidEvent, RawEvent, from_http

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
START_TIMEOUT = 30.0
BACKLOG = 1024
# The function's command, run with the Service's listening socket as fd 3 and LISTEN_FDS/LISTEN_PID
# set as systemd socket activation sets them (LISTEN_PID must be the process that serves: bash's
# own pid, which `exec` keeps).
_HAND_OVER = ('[ "$SAGA_LISTEN_FD" = 3 ] || exec 3<&"$SAGA_LISTEN_FD" {SAGA_LISTEN_FD}<&- '
              '&& export LISTEN_FDS=1 LISTEN_PID=$$ && exec "$@"')


@dataclass
class Function:
    """One Knative Service played by one local process, started on demand."""

    name: str
    port: int  # the Service's address
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    cwd: Path
    process: Child | None = None
    inflight: int = 0  # requests the activator holds (a test may hold one to keep the function up)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started_in: float | None = None  # seconds from spawn to ready, at the last start (the benchmark reads it)
    listener: socket.socket | None = None  # the Service's port, bound once
    site: web.SockSite | None = None  # the activator accepting on it; None while the function does
    active_at: float = field(default_factory=time.monotonic)  # when it was last seen busy
    counts: Counts | None = None  # the requests the running process started and finished
    seen_started: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()


class Gateway:
    def __init__(self, functions: Mapping[str, Function], *, idle_seconds: float, keep_warm: bool,
                 kafka_bootstrap: str, broker_topic: str, ingress_port: int, ingress_path: str) -> None:
        self.functions = dict(functions)
        self.idle_seconds = idle_seconds
        self.keep_warm = keep_warm
        self.broker_topic = broker_topic
        self.ingress_port = ingress_port
        self.ingress_path = ingress_path
        self.kafka_bootstrap = kafka_bootstrap
        self.producer: AsyncProducer | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self._runners: list[web.AppRunner] = []
        self._activators: dict[str, web.AppRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None  # PingSources
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # per function: dropped with its process

    # --- life cycle (called from the stack's thread) ---
    def start(self, pings: list[tuple[str, float, str, str, str]]) -> None:
        for function in self.functions.values():
            function.listener = _listen(function.port)
        self.producer = AsyncProducer(self.kafka_bootstrap)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(pings), self.loop).result(timeout=120)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            if self.producer is not None:
                self.producer.close()
        finally:  # whatever failed above, no function process outlives the stack
            for function in self.functions.values():
                if function.process is not None:
                    function.process.stop()
                if function.listener is not None:
                    function.listener.close()

    @staticmethod
    def _new_session() -> aiohttp.ClientSession:
        # A function closes a keep-alive connection idle for 2 s: reusing one it is closing was a
        # "connection reset" (a 503) under load, so this side lets them go after 1 s.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0)
        # A proxy passes the body as it came: decompressed, it no longer matched its Content-Encoding
        # (a gzipped /metrics answer arrived as plain text still labelled gzip).
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60),
                                     auto_decompress=False)

    async def _drop_connections(self, function: Function) -> None:
        """After its process stopped: kept-alive connections to it are dead, and reusing one is a 503."""
        old, self._sessions[function.name] = self._sessions[function.name], self._new_session()
        await old.close()

    async def _start(self, pings: list[tuple[str, float, str, str, str]]) -> None:
        self._session = self._new_session()
        self._sessions = {name: self._new_session() for name in self.functions}
        for function in self.functions.values():
            app = web.Application(client_max_size=16 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._proxy_to(function))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            self._runners.append(runner)
            self._activators[function.name] = runner
            await self._accept(function)
        ingress = web.Application(client_max_size=16 * 1024 * 1024)
        ingress.router.add_post(self.ingress_path, self._ingress)
        runner = web.AppRunner(ingress, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.ingress_port).start()
        self._runners.append(runner)
        if self.keep_warm:
            await asyncio.gather(*(self._ensure_running(f) for f in self.functions.values()))
        else:
            self._spawn(self._reap_idle())
        for name, interval, sink, data, content_type in pings:
            self._spawn(self._ping(name, interval, sink, data, content_type))

    def _spawn(self, work: Coroutine[None, None, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for function in self.functions.values():
            await self._hand_over(function)
        for runner in self._runners:
            await runner.cleanup()
        for session in [self._session, *self._sessions.values()]:
            if session is not None:
                await session.close()

    def redeploy(self, name: str, argv: list[str]) -> None:
        """A new revision of one function: the running process stops, the next request starts `argv`."""
        asyncio.run_coroutine_threadsafe(self._redeploy(self.functions[name], argv), self.loop).result(timeout=60)

    async def _redeploy(self, function: Function, argv: list[str]) -> None:
        async with function.lock:
            function.argv = argv
            await self._stop_process(function, quick=False)
        if self.keep_warm:
            await self._ensure_running(function)

    # --- who accepts on a Service's port ---
    async def _accept(self, function: Function) -> None:
        """The activator accepts on the port (the function is scaled to zero)."""
        if function.site is None:
            assert function.listener is not None
            # A duplicate of the socket: closing it when the function takes over leaves the port open.
            own = socket.socket(fileno=os.dup(function.listener.fileno()))
            function.site = web.SockSite(self._activators[function.name], own)
            await function.site.start()

    async def _hand_over(self, function: Function) -> None:
        """The activator stops accepting: connections wait in the backlog for the function."""
        if function.site is not None:
            site, function.site = function.site, None
            await site.stop()

    async def _ensure_running(self, function: Function) -> bool:
        """True when this call started the process."""
        if function.running:
            return False
        async with function.lock:  # concurrent first requests start it once
            if function.running:
                return False
            await self._hand_over(function)
            function.active_at = time.monotonic()  # starting counts as busy: never reaped mid-start
            assert function.listener is not None
            inherited = function.listener.fileno()
            counts_file = function.log_file.with_suffix(".activity")
            counts_file.parent.mkdir(parents=True, exist_ok=True)  # before start_child makes it on a fresh clone
            function.counts = Counts(counts_file)
            function.counts.write(0, 0)
            function.seen_started = 0
            spawned = time.monotonic()
            function.process = start_child(
                function.name, ["bash", "-c", _HAND_OVER, function.name, *function.argv], function.log_file,
                env={**function.env, "SAGA_LISTEN_FD": str(inherited), ACTIVITY_ENV: str(counts_file)},
                cwd=function.cwd, pass_fds=(inherited,),
            )
            try:
                await self._ready(function, spawned + START_TIMEOUT)
            except BaseException:
                await self._stop_process(function, quick=True)
                raise
            function.started_in = time.monotonic() - spawned
            function.active_at = time.monotonic()
            self._watch_exit(function, function.process)
            log.info("scaled %s from zero (pid %s, ready after %.0f ms)",
                     function.name, function.process.pid, function.started_in * 1000)
            return True

    async def _ready(self, function: Function, deadline: float) -> None:
        """Wait for the function to answer on its port. functions-framework answers GET /robots.txt
        itself (404) without calling the function: a readiness probe that runs no code of ours."""
        probe = asyncio.ensure_future(self._sessions[function.name].get(
            f"http://127.0.0.1:{function.port}/robots.txt", timeout=aiohttp.ClientTimeout(total=START_TIMEOUT)))
        try:
            while not probe.done():
                if function.process is None or not function.process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"function {function.name} did not start; see {function.log_file}")
                await asyncio.wait({probe}, timeout=0.005)  # a cold start is measured to this step
            (await probe).release()
        finally:
            probe.cancel()

    def _watch_exit(self, function: Function, process: Child) -> None:
        """When the process ends (killed, crashed, stopped), the activator takes its port back, so the
        next request starts a new one (a pidfd becomes readable when its process ends)."""
        loop = asyncio.get_running_loop()
        exited = os.pidfd_open(process.pid)

        def ended() -> None:
            loop.remove_reader(exited)
            os.close(exited)
            self._spawn(self._after_exit(function, process))

        loop.add_reader(exited, ended)

    async def _after_exit(self, function: Function, process: Child) -> None:
        async with function.lock:
            if function.process is process:  # not stopped on purpose
                function.process = None
                process.popen.wait()
                log.warning("%s (pid %s) exited with %s", function.name, process.pid, process.popen.returncode)
                await self._accept(function)
                await self._drop_connections(function)

    async def _stop_process(self, function: Function, *, quick: bool) -> None:
        """Under the function's lock: the activator takes the port back, then the process stops (its
        requests in flight finish; `quick`: killed with its worker at once)."""
        await self._accept(function)
        process, function.process = function.process, None
        if process is not None:
            stop = process.kill_group if quick else process.stop
            await asyncio.get_running_loop().run_in_executor(None, stop)
            await self._drop_connections(function)

    # --- activator ---
    def _proxy_to(self, function: Function):  # type: ignore[no-untyped-def]
        async def proxy(request: web.Request) -> web.StreamResponse:
            function.inflight += 1
            try:
                await self._ensure_running(function)
                headers = {k: v for k, v in request.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "x-forwarded-for"}
                # As Envoy at the ingress gateway does: append the peer's address to X-Forwarded-For.
                forwarded = request.headers.get("X-Forwarded-For")
                peer = request.remote or "unknown"
                headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
                url = f"http://127.0.0.1:{function.port}{request.path_qs}"  # the function accepts now
                body = await request.read()
                # Only the caller's own Accept-Encoding goes on: aiohttp would add one, and a function would
                # then compress for a client that never asked for it.
                async with self._sessions[function.name].request(
                    request.method, url, headers=headers, data=body, allow_redirects=False,
                    skip_auto_headers={"Accept-Encoding"},
                ) as answer:
                    answered = await answer.read()
                    back = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                    response = web.Response(status=answer.status, body=answered, headers=back)
                    # The client's next request opens a new connection, which the function accepts.
                    response.force_close()
                    return response
            except (aiohttp.ClientError, RuntimeError) as exc:
                log.warning("%s: %s", function.name, exc)
                return web.Response(status=503, text=f"{function.name} unavailable")
            finally:
                function.inflight -= 1
                function.active_at = time.monotonic()

        return proxy

    async def _reap_idle(self) -> None:
        """Scale to zero what had no request for `idle_seconds` and has none in flight (as Knative's
        autoscaler does with the concurrency queue-proxy reports)."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for function in self.functions.values():
                if not function.running or function.site is not None or function.counts is None:
                    continue
                started, finished = function.counts.read()
                if function.inflight or started != finished or started != function.seen_started:
                    function.active_at, function.seen_started = now, started
                elif now - function.active_at > self.idle_seconds:
                    await self._reap(function)

    async def _reap(self, function: Function) -> None:
        async with function.lock:
            # Looked at again under the lock: a request may have started it meanwhile.
            started, finished = function.counts.read() if function.counts is not None else (0, 0)
            if (not function.running or function.inflight or started != finished
                    or started != function.seen_started or time.monotonic() - function.active_at <= self.idle_seconds):
                return
            log.info("scaling %s to zero after %.0f s idle", function.name, self.idle_seconds)
            try:
                await self._stop_process(function, quick=False)
            except Exception:  # the reaper goes on for the other functions
                log.exception("%s: stopping it failed", function.name)

    def scale_to_zero(self, name: str) -> None:
        """Stop one idle function now; its next request starts it again (cold-start measurements).
        Killed at once: nothing is in flight, and a graceful shutdown would only add to each trial."""
        async def now(function: Function) -> None:
            async with function.lock:
                await self._stop_process(function, quick=True)

        asyncio.run_coroutine_threadsafe(now(self.functions[name]), self.loop).result(timeout=60)

    def start_function(self, name: str) -> int:
        """Start one function if it is not running, as its next request would (from another thread);
        its process group id."""
        function = self.functions[name]
        asyncio.run_coroutine_threadsafe(self._ensure_running(function), self.loop).result(timeout=60)
        assert function.process is not None
        return function.process.pid

    def hold(self, name: str) -> int:
        """`start_function`, counting a request in flight on it, so it is not scaled to zero until
        `release`."""
        function = self.functions[name]
        self.loop.call_soon_threadsafe(lambda: setattr(function, "inflight", function.inflight + 1))
        return self.start_function(name)

    def release(self, name: str) -> None:
        function = self.functions[name]
        self.loop.call_soon_threadsafe(lambda: setattr(function, "inflight", function.inflight - 1))

    def busy(self, name: str) -> bool:
        """Whether the function has a request it has not answered yet."""
        function = self.functions[name]
        started, finished = function.counts.read() if function.counts is not None else (0, 0)
        return function.inflight > 0 or started != finished

    # --- broker ingress ---
    async def _ingress(self, request: web.Request) -> web.Response:
        """Knative's broker receiver: a CloudEvent in either HTTP mode, written to the broker topic in
        binary mode (`saga.eventing.binding`); 202 once Kafka acknowledged it."""
        assert self.producer is not None
        try:
            event = from_http(request.headers, await request.read())
        except InvalidEvent as exc:
            return _problem(400, "Not a CloudEvent", str(exc))
        try:
            await self.producer.send(event.record(self.broker_topic))
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                return _problem(413, "Event too large", "the event is larger than the broker takes")
            log.warning("ingress: event %s not written: %s", event["id"], exc)
            return _problem(503, "Broker unavailable", "the broker could not take the event")
        except BufferError:
            return _problem(503, "Broker busy", "the broker is behind; try again")
        return web.Response(status=202)

    # --- PingSource ---
    async def _ping(self, source: str, interval: float, sink: str, data: str, content_type: str) -> None:
        assert self._session is not None
        while True:
            await asyncio.sleep(interval - (time.time() % interval))
            event = RawEvent({
                "specversion": "1.0", "id": str(uuid.uuid4()), "source": source, "type": "dev.knative.sources.ping",
                "time": datetime.now(UTC).isoformat(), "datacontenttype": content_type,
            }, data.encode())
            headers, body = event.http()
            try:
                async with self._session.post(sink, headers=headers, data=body) as answer:
                    await answer.read()
            except aiohttp.ClientError as exc:
                log.warning("ping %s: %s", source, exc)


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError as exc:
        listener.close()
        raise RuntimeError(f"port {port} is taken (by a stack left running?): {exc}") from exc
    listener.listen(BACKLOG)
    listener.set_inheritable(True)
    return listener


def _problem(status: int, title: str, detail: str) -> web.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(status=status, text=json.dumps(body), content_type="application/problem+json")

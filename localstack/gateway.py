"""The request path of the local stack, on one asyncio loop: the activator in front of every
function (start on first request, stop when idle: scale to zero), the broker ingress (K_SINK:
CloudEvents in, Kafka records out through an idempotent producer), and the PingSources."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web
from cloudevents.conversion import to_binary
from cloudevents.exceptions import GenericException as CloudEventError
from cloudevents.http import CloudEvent, from_http
from confluent_kafka import KafkaError, KafkaException, Producer

from localstack.process import Child, port_open, start_child
from saga.eventing.records import kafka_record

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive"})
COLD_ATTEMPTS = 6  # tries of a request that started its function's process (back-off 50 ms x n: 1 s in all)
START_TIMEOUT = 30.0


@dataclass
class Function:
    """One Knative Service played by one local process, started on demand."""

    name: str
    port: int  # the activator's port: the Service's address
    private_port: int  # where the process itself listens
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    cwd: Path
    process: Child | None = None
    last_used: float = field(default_factory=time.monotonic)
    inflight: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    started_in: float | None = None  # seconds from spawn to listening, at the last start (the benchmark reads it)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive()

    async def ensure_running(self) -> bool:
        """True when this call started the process."""
        if self.running:
            return False
        async with self.lock:  # concurrent first requests start it once
            if self.running:
                return False
            freed = time.monotonic() + 2.0  # a process just stopped may still be letting go of it
            while port_open(self.private_port):
                if time.monotonic() > freed:
                    # Another process (say, one orphaned by a killed stack) holds the port: requests
                    # would reach it instead of this function. Refuse rather than proxy to a stranger.
                    raise RuntimeError(f"port {self.private_port} of {self.name} is taken by another process")
                await asyncio.sleep(0.05)
            spawned = time.monotonic()
            self.process = start_child(self.name, self.argv, self.log_file, env=self.env, cwd=self.cwd)
            deadline = spawned + START_TIMEOUT
            while not port_open(self.private_port):
                if not self.process.alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"function {self.name} did not start; see {self.log_file}")
                await asyncio.sleep(0.005)  # a cold start is measured to this step
            self.started_in = time.monotonic() - spawned
            log.info("scaled %s from zero (pid %s, listening after %.0f ms)",
                     self.name, self.process.pid, self.started_in * 1000)
            return True


class Gateway:
    def __init__(self, functions: Mapping[str, Function], *, idle_seconds: float, keep_warm: bool,
                 kafka_bootstrap: str, broker_topic: str, ingress_port: int, ingress_path: str) -> None:
        self.functions = dict(functions)
        self.idle_seconds = idle_seconds
        self.keep_warm = keep_warm
        self.broker_topic = broker_topic
        self.ingress_port = ingress_port
        self.ingress_path = ingress_path
        self.producer = Producer({
            "bootstrap.servers": kafka_bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 1,
            # Failures reach each request through its delivery report; the client's own log stays quiet.
            "log_level": 2,
        })
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway", daemon=True)
        self._runners: list[web.AppRunner] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None  # PingSources
        self._sessions: dict[str, aiohttp.ClientSession] = {}  # per function: dropped with its process
        self._stop_polling = threading.Event()
        self._poller = threading.Thread(target=self._poll_producer, name="ingress-producer", daemon=True)

    # --- life cycle (called from the stack's thread) ---
    def start(self, pings: list[tuple[str, float, str, str, str]]) -> None:
        self._poller.start()
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(pings), self.loop).result(timeout=60)

    def stop(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=60)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self._stop_polling.set()
            self._poller.join(timeout=10)
            self.producer.flush(10)
        finally:  # whatever failed above, no function process outlives the stack
            for function in self.functions.values():
                if function.process is not None:
                    function.process.stop()

    @staticmethod
    def _new_session() -> aiohttp.ClientSession:
        # gunicorn closes a keep-alive connection idle for 2 s: reusing one it is closing was a
        # "connection reset" (a 503) under load, so this side lets them go after 1 s.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=1.0)
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

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
            await self._serve(app, function.port)
        ingress = web.Application(client_max_size=16 * 1024 * 1024)
        ingress.router.add_post(self.ingress_path, self._ingress)
        await self._serve(ingress, self.ingress_port)
        if self.keep_warm:
            await asyncio.gather(*(f.ensure_running() for f in self.functions.values()))
        else:
            self._tasks.append(asyncio.create_task(self._reap_idle()))
        for name, interval, sink, data, content_type in pings:
            self._tasks.append(asyncio.create_task(self._ping(name, interval, sink, data, content_type)))

    async def _serve(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
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
            process, function.process = function.process, None
            function.argv = argv
            if process is not None:
                await asyncio.get_running_loop().run_in_executor(None, process.stop)
                await self._drop_connections(function)
        if self.keep_warm:
            await function.ensure_running()

    # --- activator ---
    def _proxy_to(self, function: Function):  # type: ignore[no-untyped-def]
        async def proxy(request: web.Request) -> web.StreamResponse:
            function.inflight += 1
            function.last_used = time.monotonic()
            try:
                started = await function.ensure_running()
                headers = {k: v for k, v in request.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() != "x-forwarded-for"}
                # As Envoy at the ingress gateway does: append the peer's address to X-Forwarded-For.
                forwarded = request.headers.get("X-Forwarded-For")
                peer = request.remote or "unknown"
                headers["X-Forwarded-For"] = f"{forwarded}, {peer}" if forwarded else peer
                url = f"http://127.0.0.1:{function.private_port}{request.path_qs}"
                body = await request.read()
                for attempt in range(1, COLD_ATTEMPTS + 1):
                    try:
                        async with self._sessions[function.name].request(
                            request.method, url, headers=headers, data=body, allow_redirects=False
                        ) as answer:
                            answered = await answer.read()
                            back = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                            return web.Response(status=answer.status, body=answered, headers=back)
                    except aiohttp.ClientConnectionError as exc:
                        # A process this request just started can refuse or reset a connection while
                        # its worker comes up: try again, as Knative's activator does for a new pod.
                        if not started or attempt == COLD_ATTEMPTS:
                            raise
                        log.info("%s: %s; retrying the first request", function.name, exc)
                        await asyncio.sleep(0.05 * attempt)
                raise AssertionError("unreachable")
            except (aiohttp.ClientError, RuntimeError) as exc:
                log.warning("%s: %s", function.name, exc)
                return web.Response(status=503, text=f"{function.name} unavailable")
            finally:
                function.inflight -= 1
                function.last_used = time.monotonic()

        return proxy

    async def _reap_idle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for function in self.functions.values():
                if function.running and function.inflight == 0 and now - function.last_used > self.idle_seconds:
                    log.info("scaling %s to zero after %.0f s idle", function.name, self.idle_seconds)
                    await self._scale_to_zero(function)

    def scale_to_zero(self, name: str) -> None:
        """Stop one idle function now; its next request starts it again (cold-start measurements).
        Killed with its worker at once: gunicorn's own shutdown takes a second, and nothing is in flight."""
        future = asyncio.run_coroutine_threadsafe(self._scale_to_zero(self.functions[name], quick=True), self.loop)
        future.result(timeout=60)

    async def _scale_to_zero(self, function: Function, quick: bool = False) -> None:
        async with function.lock:  # a request arriving now waits until the old process is gone
            process, function.process = function.process, None
            if process is not None:
                stop = process.kill_group if quick else process.stop
                await asyncio.get_running_loop().run_in_executor(None, stop)
                await self._drop_connections(function)

    # --- broker ingress ---
    def _poll_producer(self) -> None:
        while not self._stop_polling.is_set():
            self.producer.poll(0.05)

    async def _ingress(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            event = from_http(dict(request.headers), body)
        except CloudEventError as exc:
            return web.Response(status=400, text=f"not a CloudEvent: {exc}")
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[object] = loop.create_future()

        def settle(error: object) -> None:
            if not delivered.done():
                delivered.set_result(error)

        def on_delivery(error: object, _message: object) -> None:
            loop.call_soon_threadsafe(settle, error)

        record = kafka_record(event, self.broker_topic)
        try:
            self.producer.produce(record.topic, value=record.value, key=record.key,
                                  headers=list(record.headers.items()), on_delivery=on_delivery)
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                return web.Response(status=413, text="the event is larger than the broker takes")
            log.warning("ingress: event %s refused by the producer: %s", event["id"], exc)
            return web.Response(status=503, text="the broker could not take the event")
        except BufferError:
            return web.Response(status=503, text="the broker is behind; try again")
        try:
            error = await asyncio.wait_for(delivered, timeout=10)
        except TimeoutError:
            error = "timed out"
        if error is not None:
            log.warning("ingress: event %s not written: %s", event["id"], error)
            return web.Response(status=503, text="the broker could not take the event")
        return web.Response(status=202)

    # --- PingSource ---
    async def _ping(self, source: str, interval: float, sink: str, data: str, content_type: str) -> None:
        assert self._session is not None
        while True:
            await asyncio.sleep(interval - (time.time() % interval))
            event = CloudEvent({"type": "dev.knative.sources.ping", "source": source,
                                "datacontenttype": content_type}, data)
            headers, body = to_binary(event)
            try:
                async with self._session.post(sink, headers=headers, data=body) as answer:
                    await answer.read()
            except aiohttp.ClientError as exc:
                log.warning("ping %s: %s", source, exc)

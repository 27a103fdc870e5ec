"""PostgreSQL notifications for requests that wait for something to happen (an order to end): a
thread LISTENs on a connection of its own and wakes, on the event loop, the waiters of the key each
notice names. No polling: a waiter reads the state once, then sleeps until its notice (or its time)
comes. After a lost connection, every waiter is woken to read again, since a notice may have been
missed while no one listened."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class Notices:
    def __init__(self, url: str, channel: str, key_of: Callable[[str], str]) -> None:
        self.url = url
        self.channel = channel
        self.key_of = key_of  # the key a notice's payload names
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def waiting(self, key: str) -> Iterator[asyncio.Event]:
        """An event set when a notice names `key`. Enter it before reading the state waited on, so
        a notice sent in between is not missed."""
        self._start()
        event = asyncio.Event()
        self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[key]

    def _start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            threading.Thread(target=self._listen, name=f"listen-{self.channel}", daemon=True).start()

    def _listen(self) -> None:
        assert self._loop is not None
        while True:
            try:
                with psycopg.connect(self.url, autocommit=True) as connection:
                    connection.execute(f"LISTEN {self.channel}")
                    self._loop.call_soon_threadsafe(self._wake_all)  # what was missed meanwhile
                    for notice in connection.notifies():
                        try:
                            key = self.key_of(notice.payload)
                        except (ValueError, KeyError, TypeError):
                            log.warning("a notice on %s names nothing: %r", self.channel, notice.payload[:200])
                            continue
                        self._loop.call_soon_threadsafe(self._wake, key)
            except Exception as exc:  # the listener must outlive any failure: waiters depend on it
                log.warning("listening on %s: %s; listening again in %.0f s", self.channel, exc, RECONNECT_SECONDS)
            threading.Event().wait(RECONNECT_SECONDS)

    def _wake(self, key: str) -> None:
        for event in self._waiters.get(key, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()

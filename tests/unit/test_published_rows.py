"""Published outbox rows are deleted after the answer, in batches: the ids that arrive while one
delete runs go in the next, and a failed delete neither raises nor loses the ids that follow."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from saga.outbox import Outbox, PublishedRows


class Deletes:
    """The database side of PublishedRows: records each delete's ids; the first one blocks until
    released, so ids arriving meanwhile must wait for the next; `fail` makes one delete raise."""

    def __init__(self, *, fail: int | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.fail = fail

    async def call(self, blocking: Any, database: Any, outbox: Outbox, event_ids: list[str]) -> None:
        self.batches.append(list(event_ids))
        if len(self.batches) == 1:
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 5.0)
        if self.fail == len(self.batches):
            raise OSError("connection lost")


def test_ids_that_arrive_while_a_delete_runs_go_in_one_next_delete() -> None:
    deletes = Deletes()

    async def scenario() -> None:
        rows = PublishedRows(deletes, Outbox("orders.outbox"))  # type: ignore[arg-type]
        rows.add(["a"])
        await asyncio.sleep(0)  # the first delete starts and blocks
        rows.add(["b"])
        rows.add(["c", "d"])
        deletes.release.set()
        await rows.drained()

    asyncio.run(scenario())
    assert deletes.batches == [["a"], ["b", "c", "d"]]


def test_a_failed_delete_does_not_stop_the_next() -> None:
    deletes = Deletes(fail=1)

    async def scenario() -> None:
        rows = PublishedRows(deletes, Outbox("orders.outbox"))  # type: ignore[arg-type]
        rows.add(["a"])
        await asyncio.sleep(0)
        rows.add(["b"])
        deletes.release.set()
        await rows.drained()
        rows.add(["c"])
        await rows.drained()

    asyncio.run(scenario())
    assert deletes.batches == [["a"], ["b"], ["c"]]


def test_nothing_published_deletes_nothing() -> None:
    deletes = Deletes()

    async def scenario() -> None:
        rows = PublishedRows(deletes, Outbox("orders.outbox"))  # type: ignore[arg-type]
        rows.add([])
        await rows.drained()

    asyncio.run(scenario())
    assert deletes.batches == []

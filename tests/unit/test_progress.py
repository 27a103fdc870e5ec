"""Progress of `saga replay` and `make bench`: a bar on a terminal, plain rate-limited lines in logs."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import termios
import threading
from collections.abc import Iterator

import pytest

from saga.progress import Progress
from saga.replay.engine import _Passed
from saga.replay.positions import Range


class Clock:
    """A clock the test moves by hand: no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(stream: io.StringIO | None = None, clock: Clock | None = None) -> tuple[Progress, io.StringIO, Clock]:
    stream = stream if stream is not None else io.StringIO()
    clock = clock or Clock()
    return Progress("replay", stream=stream, environ={}, clock=clock, interval=10.0), stream, clock


def test_plain_lines_come_at_most_every_interval_and_once_at_the_end() -> None:
    progress, stream, clock = plain()
    with progress.phase("re-delivering order-saga", unit="events") as phase:
        phase.plan(5000)
        for _ in range(200):  # 200 events/s for 25 s, in steps a float adds exactly
            clock.now += 0.125
            phase.advance(25)
    assert stream.getvalue().splitlines() == [
        "replay: re-delivering order-saga 2000/5000 events, 200/s",
        "replay: re-delivering order-saga 4000/5000 events, 200/s",
        "replay: re-delivering order-saga 5000/5000 events, 200/s, done in 25.0 s",
    ]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_a_short_phase_prints_only_its_final_line_with_count_and_rate() -> None:
    progress, stream, clock = plain()
    with progress.phase("cold start goods-reserve", unit="starts", total=2) as phase:
        clock.now += 1.5
        phase.advance()
        clock.now += 2.5
        phase.advance()
    assert stream.getvalue() == "replay: cold start goods-reserve 2/2 starts, 0.5/s, done in 4.0 s\n"


def test_a_phase_of_unknown_size_shows_its_count_alone() -> None:
    progress, stream, clock = plain()
    with progress.phase("closed c=64", unit="sagas") as phase:
        clock.now += 4.0
        phase.advance(250)
    assert stream.getvalue() == "replay: closed c=64 250 sagas, 62/s, done in 4.0 s\n"


def test_a_phase_measured_by_position_shows_where_it_is() -> None:
    progress, stream, clock = plain()
    with progress.phase("waiting for the Triggers", unit="records") as phase:
        phase.reached(0, 40)
        clock.now += 12.0
        phase.reached(30, 40)
        clock.now += 1.0
        phase.reached(40, 40)
    assert stream.getvalue().splitlines() == [
        "replay: waiting for the Triggers 30/40 records, 2.5/s",
        "replay: waiting for the Triggers 40/40 records, 3.1/s, done in 13.0 s",
    ]


def test_a_phase_that_fails_still_ends_with_a_line_saying_it_stopped() -> None:
    progress, stream, clock = plain()
    with pytest.raises(TimeoutError), progress.phase("waiting for the Triggers", unit="records") as phase:
        clock.now += 3.0
        phase.reached(5, 40)
        raise TimeoutError("still behind")
    assert stream.getvalue() == "replay: waiting for the Triggers 5/40 records, 1.7/s, stopped after 3.0 s\n"


def test_advancing_from_many_threads_loses_no_count() -> None:
    progress, stream, _ = plain()
    with progress.phase("re-delivering order-saga", unit="events") as phase:
        def deliver() -> None:
            for _ in range(2000):
                phase.advance()

        lanes = [threading.Thread(target=deliver) for _ in range(8)]
        for lane in lanes:
            lane.start()
        for lane in lanes:
            lane.join()
    assert stream.getvalue().startswith("replay: re-delivering order-saga 16000 events")


@pytest.mark.parametrize(("environ", "asked"), [({"CI": "true"}, False), ({"CI": "1"}, False), ({}, True)])
def test_ci_or_asking_for_plain_output_gives_plain_lines_even_on_a_terminal(environ: dict[str, str],
                                                                            asked: bool) -> None:
    stream = Terminal()
    clock = Clock()
    progress = Progress("bench", stream=stream, plain=asked, environ=environ, clock=clock)
    with progress.phase("open 10/s", unit="sagas", total=50) as phase:
        clock.now += 5.0
        phase.advance(50)
    assert stream.getvalue() == "bench: open 10/s 50/50 sagas, 10/s, done in 5.0 s\n"


def test_a_terminal_gets_a_bar_with_the_label_the_count_and_the_rate() -> None:
    stream = Terminal()
    progress = Progress("replay", stream=stream, environ={"CI": "false"})
    assert not progress.plain
    with progress.phase("re-delivering order-saga", unit="events") as phase:
        phase.plan(50)
        phase.advance(30)
    with progress.phase("closed c=4", unit="sagas") as phase:
        phase.advance(7)
    shown = stream.getvalue()
    last_frames = [line.rsplit("\r", 1)[-1] for line in shown.split("\n") if line]
    assert last_frames[0].startswith("re-delivering order-saga:  60%|")
    assert "30/50" in last_frames[0] and "events/s" in last_frames[0]
    assert last_frames[1].startswith("closed c=4: 7 sagas [") and "sagas/s]" in last_frames[1]
    assert "\r" in shown, "a bar redraws its line"


@pytest.fixture
def pseudo_terminal() -> Iterator[io.TextIOWrapper]:
    controller, terminal = os.openpty()
    with os.fdopen(controller, "rb", buffering=0), os.fdopen(terminal, "w") as stream:
        yield stream


def test_a_terminal_without_a_size_gets_plain_lines_as_tqdm_would_draw_nothing(
        pseudo_terminal: io.TextIOWrapper) -> None:
    assert pseudo_terminal.isatty()
    assert Progress("replay", stream=pseudo_terminal, environ={}).plain, "a new pty is 0x0"
    fcntl.ioctl(pseudo_terminal.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    assert not Progress("replay", stream=pseudo_terminal, environ={}).plain


def test_a_bar_leaves_no_thread_running() -> None:
    before = set(threading.enumerate())
    with Progress("replay", stream=Terminal(), environ={}).phase("cold start order-api", unit="starts") as phase:
        phase.advance()
    assert set(threading.enumerate()) == before


class Record:
    """The two things replay progress reads of a Kafka message."""

    def __init__(self, partition: int, offset: int) -> None:
        self._partition, self._offset = partition, offset

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_replay_progress_reaches_its_plan_although_commit_markers_take_offsets() -> None:
    """A transactional writer's markers take offsets that no reader is handed; the plan counts offsets."""
    spans = [Range(0, 10, 20), Range(1, 0, 4)]
    counted: list[int] = []
    passed = _Passed(spans, counted.append)
    for partition, offset in ((0, 10), (0, 11), (0, 13), (0, 16), (1, 0), (1, 2)):  # markers in the gaps
        passed.record(Record(partition, offset))  # type: ignore[arg-type]  # a Message's partition and offset
    assert counted == [1, 1, 2, 3, 1, 2]
    passed.all()
    assert sum(counted) == sum(span.size for span in spans) == 14

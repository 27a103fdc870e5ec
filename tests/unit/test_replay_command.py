"""`saga replay`'s arguments: what it refuses before touching Kafka, and how it reads --from."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from saga.cli import main
from saga.eventing.topology import Topology, Trigger
from saga.replay.positions import Start


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "choose one"),
        (["--trigger", "a", "--saga", "x", "--to", "http://127.0.0.1:1/"], "choose one"),
        (["--trigger", "a", "--all-triggers", "--from", "earliest"], "exclude each other"),
        (["--all-triggers"], "--from is required"),
        (["--all-triggers", "--from", "yesterday"], "neither `earliest`"),
        (["--all-triggers", "--from", "2026-11-25T10:00:00"], "no time zone"),
        (["--saga", "x"], "--saga needs --to"),
        (["--all-triggers", "--from", "earliest", "--broker", "just-a-name", "--bootstrap", "b:1"], "NAMESPACE/NAME"),
    ],
)
def test_bad_arguments_are_refused_with_a_reason(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["replay", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_unknown_trigger_names_the_known_ones(tmp_path: Path) -> None:
    topology = tmp_path / "topology.json"
    Topology("127.0.0.1:1", "topic", (Trigger("goods-reserve", "g", {}, "http://127.0.0.1:1/"),)).dump(topology)
    result = CliRunner().invoke(main, ["replay", "--topology", str(topology), "--trigger", "nope", "--from", "0"])
    assert result.exit_code == 1
    assert "no Trigger named 'nope'; the broker has: goods-reserve" in result.output


def test_a_missing_topology_says_to_start_the_stack(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", "--topology", str(tmp_path / "none.json"), "--dead-letters"])
    assert result.exit_code == 1
    assert "is the local stack running" in result.output


def test_start_positions() -> None:
    assert Start.parse("earliest") == Start(earliest=True)
    assert Start.parse("42") == Start(offset=42)
    assert Start.parse("2026-11-25T10:00:00Z") == Start(time=datetime(2026, 11, 25, 10, tzinfo=UTC))
    assert str(Start.parse("2026-11-25T11:00:00+01:00")) == "2026-11-25T11:00:00+01:00"

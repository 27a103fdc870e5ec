"""The lock files hold every package at the version pyproject.toml pins, so `make lock` was run
after the last change to the pins (and the image gets the versions the tests ran with)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)$")
_LOCKED = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)", re.M)


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def pins(*groups: str) -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    found = {}
    for group in groups:
        requirements = project["dependencies"] if group == "runtime" else project["optional-dependencies"][group]
        for requirement in requirements:
            match = _PIN.match(requirement.split(";")[0].strip())
            if requirement.startswith("knative-saga"):
                continue  # an extra of the project itself
            assert match, f"{requirement!r} is not pinned to one version"
            found[_name(match[1])] = match[2]
    return found


def locked(lock: str) -> dict[str, str]:
    return {_name(name): version for name, version in _LOCKED.findall((REPO / "requirements" / lock).read_text())}


def test_the_dev_lock_has_every_pin_of_pyproject() -> None:
    dev = locked("dev.lock")
    wanted = pins("runtime", "replay", "stack", "dev")
    assert {name: dev.get(name) for name in wanted} == wanted, "run `make lock`"


def test_the_image_lock_has_the_runtime_pins_at_the_versions_the_tests_use() -> None:
    image, dev = locked("image.lock"), locked("dev.lock")
    wanted = pins("runtime", "replay")
    assert {name: image.get(name) for name in wanted} == wanted, "run `make lock`"
    assert {name: dev.get(name) for name in image} == image, "the image and the tests differ in a package"
    assert not set(pins("dev")) & set(image), "a test tool in the image"

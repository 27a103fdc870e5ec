"""Where the CPU of the stack's Python processes goes (`make bench ARGS=--profile`): py-spy samples
each function's process on a saga's path, the dispatcher and the gateway during one load phase. The
folded stacks (flame graph input) are kept; the summary is the share of busy samples per package and the
functions with the most samples of their own (py-spy leaves idle threads out)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RATE = 100  # samples per second: enough for shares of a few percent, light on 2 cores
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?):\d+\)$")


def start(pids: Mapping[str, int], seconds: float, folder: Path) -> list[subprocess.Popen[bytes]]:
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    return [
        subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", str(RATE),
                          "--format", "raw", "--nonblocking", "--output", str(folder / f"{name}.folded")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for name, pid in pids.items()
    ]


def _package(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0]
    if "/lib/python3" in path:
        return "stdlib"
    return path.split("/", 1)[0] if "/" in path else path


def summary(folder: Path, top: int = 8) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for file in sorted(folder.glob("*.folded")):
        own: Counter[str] = Counter()
        packages: Counter[str] = Counter()
        total = 0
        for line in file.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            match = _FRAME.match(leaf)
            total += int(count)
            own[leaf] += int(count)
            packages[_package(match.group("file")) if match else leaf] += int(count)
        if total:
            found[file.stem] = {
                "samples": total,
                "packages_pct": {k: round(v * 100 / total, 1) for k, v in packages.most_common(top)},
                "own_pct": {k: round(v * 100 / total, 1) for k, v in own.most_common(top)},
            }
    return found

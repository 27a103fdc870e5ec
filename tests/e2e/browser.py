"""A real browser for the console's tests: Debian's chromium, driven by Playwright (whose own browser
download cannot run here). Installed with apt when missing and we are root, as localstack/postgres.py
installs PostgreSQL; started headless with the flags that keep it off the network (it would otherwise
try outside hosts, which this machine refuses)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"]
INSTALL_TIMEOUT_SECONDS = 900


def chromium() -> Path:
    """Debian's chromium, installed now if it is missing and we may (root); else an error saying how."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"{CHROMIUM} is missing: run `sudo apt-get install -y chromium` (Debian's package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, timeout=INSTALL_TIMEOUT_SECONDS)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"], check=True, env=env,
                   timeout=INSTALL_TIMEOUT_SECONDS)
    if not CHROMIUM.exists():
        raise RuntimeError(f"apt-get installed chromium, but {CHROMIUM} is not there")
    return CHROMIUM


def launch(playwright: Any) -> Any:
    """A headless chromium with a fresh profile (Playwright gives each launch its own)."""
    return playwright.chromium.launch(executable_path=str(chromium()), headless=True, args=FLAGS)

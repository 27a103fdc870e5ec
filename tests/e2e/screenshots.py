"""The console's screenshots in docs/img: each PNG carries, in a tEXt chunk, the digest of the page's files
it shows (functions.console.assets.digest), so tests/unit/test_console_screenshots.py can tell when the
page changed and the pictures did not. Written there only when SAGA_UPDATE_SCREENSHOTS=1 (`make
screenshots`); otherwise into the test run's own folder, so a test run leaves the checkout clean."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from localstack.infra import repo_root

DOCS = repo_root() / "docs" / "img"
KEYWORD = b"knative-saga-console"
SIGNATURE = b"\x89PNG\r\n\x1a\n"
UPDATE = "SAGA_UPDATE_SCREENSHOTS"


def folder(run_root: Path) -> Path:
    """Where this run writes its screenshots: docs/img when asked to, else beside the run's logs."""
    found = DOCS if os.environ.get(UPDATE) == "1" else run_root / "screenshots"
    found.mkdir(parents=True, exist_ok=True)
    return found


def stamped(png: bytes, digest: str) -> bytes:
    """The PNG with a tEXt chunk naming `digest`, right after its header chunk (IHDR)."""
    if not png.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    data = KEYWORD + b"\0" + digest.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    header_end = len(SIGNATURE) + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:header_end] + chunk + png[header_end:]


def stamp_of(png: bytes) -> str | None:
    """The digest a screenshot was stamped with, if any."""
    at = len(SIGNATURE)
    while at + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[at:at + 8])
        body = png[at + 8:at + 8 + length]
        if kind == b"tEXt" and body.startswith(KEYWORD + b"\0"):
            return body[len(KEYWORD) + 1:].decode()
        at += 12 + length
    return None

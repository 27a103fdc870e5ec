"""The console's page and the files it loads, served by the console itself (no CDN, no font service:
the page works with no internet). The files are read once per process; each answer carries a strict
Content-Security-Policy (scripts, styles and requests to this origin only, nothing inline), so what the
page shows from the data (saga ids, error texts) can never run as code."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from functions.platform.problems import NotFound

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# Every answer of the console; the JSON endpoints add `Cache-Control: no-store`.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@functools.cache
def assets() -> dict[str, Asset]:
    """Every file under static/, by name."""
    found = {}
    for path in sorted(STATIC.iterdir()):
        if path.is_file() and path.suffix in TYPES:
            body = path.read_bytes()
            found[path.name] = Asset(body, TYPES[path.suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return found


def digest() -> str:
    """One hash of every file the page is made of: the screenshots in docs/img record the one they show, so
    a test can tell when they no longer show the page as it is."""
    whole = hashlib.sha256()
    for name, asset in sorted(assets().items()):
        whole.update(name.encode() + b"\0" + asset.body + b"\0")
    return whole.hexdigest()[:32]


def serve(request: Request, name: str) -> Response:
    """One file; 304 when the browser has it already (it asks again each time: `no-cache`)."""
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"no file {name}")
    headers = {**SECURITY_HEADERS, "ETag": asset.etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)

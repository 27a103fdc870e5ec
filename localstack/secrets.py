"""Local values for the Secrets the manifests reference: the database URL of each service, and an
RS256 signing key generated once into the stack's git-ignored folder (mode 0600)."""

from __future__ import annotations

import os
from pathlib import Path


def local_secrets(root: Path, database_url: str) -> dict[str, dict[str, str]]:
    from functions.auth.keys import generate_private_key_pem

    key_file = root / "secrets" / "jwt-private-key.pem"
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(generate_private_key_pem())
    return {
        "saga-database": {f"{service}-url": database_url for service in ("order", "goods", "account", "auth")},
        "saga-jwt-signing-key": {"private-key.pem": key_file.read_text()},
    }

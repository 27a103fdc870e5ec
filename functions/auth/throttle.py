"""The login rate limit: failed logins counted per username and per client address in PostgreSQL
(every auth pod sees the same counts). Over the limit, login answers 429 with Retry-After before it
looks at the password, so guessing costs the attacker time and the server no password hashing.

Failures, not attempts, are counted: a client address may be a NAT or a proxy for many honest users,
and credential stuffing is almost all failures. A successful login clears its username's count."""

from __future__ import annotations

import math
from dataclasses import dataclass

from saga.transaction import Tx

LEFT = ("SELECT extract(epoch FROM window_start + make_interval(secs => %s) - now()) AS left "
        "FROM auth.login_failures WHERE key = %s AND failures >= %s")
FAILED = """
INSERT INTO auth.login_failures AS f (key, window_start, failures) VALUES (%(key)s, now(), 1)
ON CONFLICT (key) DO UPDATE SET
    failures = CASE WHEN f.window_start <= now() - make_interval(secs => %(window)s) THEN 1 ELSE f.failures + 1 END,
    window_start = CASE WHEN f.window_start <= now() - make_interval(secs => %(window)s) THEN now()
                        ELSE f.window_start END
"""
CLEAR = "DELETE FROM auth.login_failures WHERE key = %s"


@dataclass(frozen=True)
class Limit:
    kind: str  # "user" or "address"
    failures: int  # allowed within the window; the next attempt is refused
    window: float  # seconds


def key(limit: Limit, value: str) -> str:
    return f"{limit.kind}:{value.lower() if limit.kind == 'user' else value}"


def retry_after(tx: Tx, keyed: list[tuple[Limit, str]]) -> int | None:
    """Seconds until every key over its limit is allowed again; None when none is over it."""
    found = [tx.query(LEFT, (limit.window, key(limit, value), limit.failures)) for limit, value in keyed]
    waits = [float(left) for rows in found if (left := rows.scalar()) is not None and left > 0]
    return max(1, math.ceil(max(waits))) if waits else None


def record_failure(tx: Tx, keyed: list[tuple[Limit, str]]) -> None:
    for limit, value in keyed:
        tx.execute(FAILED, {"key": key(limit, value), "window": limit.window})


def clear(tx: Tx, limit: Limit, value: str) -> None:
    tx.execute(CLEAR, (key(limit, value),))

"""The login rate limit: failed logins counted per username and per client address in PostgreSQL
(every auth pod sees the same counts). Over the limit, login answers 429 with Retry-After before it
looks at the password, so guessing costs the attacker time and the server no password hashing.

Failures, not attempts, are counted: a client address may be a NAT or a proxy for many honest users,
and credential stuffing is almost all failures. A successful login clears its username's count."""

from __future__ import annotations

import math
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from functions.auth.schema import login_failures


@dataclass(frozen=True)
class Limit:
    kind: str  # "user" or "address"
    failures: int  # allowed within the window; the next attempt is refused
    window: float  # seconds


def key(limit: Limit, value: str) -> str:
    return f"{limit.kind}:{value.lower() if limit.kind == 'user' else value}"


def retry_after(conn: sa.Connection, keyed: list[tuple[Limit, str]]) -> int | None:
    """Seconds until every key over its limit is allowed again; None when none is over it."""
    t = login_failures
    waits = []
    for limit, value in keyed:
        left = conn.execute(
            sa.select(sa.func.extract("epoch", t.c.window_start + sa.func.make_interval(0, 0, 0, 0, 0, 0, limit.window)
                                      - sa.func.now()))
            .where(t.c.key == key(limit, value), t.c.failures >= limit.failures)
        ).scalar_one_or_none()
        if left is not None and left > 0:
            waits.append(float(left))
    return max(1, math.ceil(max(waits))) if waits else None


def record_failure(conn: sa.Connection, keyed: list[tuple[Limit, str]]) -> None:
    t = login_failures
    for limit, value in keyed:
        expired = t.c.window_start <= sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, limit.window)
        conn.execute(
            insert(t).values(key=key(limit, value), window_start=sa.func.now(), failures=1)
            .on_conflict_do_update(index_elements=[t.c.key], set_={
                "failures": sa.case((expired, 1), else_=t.c.failures + 1),
                "window_start": sa.case((expired, sa.func.now()), else_=t.c.window_start),
            })
        )


def clear(conn: sa.Connection, limit: Limit, value: str) -> None:
    conn.execute(sa.delete(login_failures).where(login_failures.c.key == key(limit, value)))

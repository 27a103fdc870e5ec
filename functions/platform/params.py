"""Query parameters read the same way by every HTTP function."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.requests import Request

from functions.platform.problems import Unprocessable


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    """`?name=` as a whole number from `low` to `high` (422 naming the field otherwise), `default` when absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    digits = raw.lstrip("0") or "0"  # int() refuses over 4300 digits, zeros too: a 500 where this is a 422
    # isascii: "²" is a digit to isdigit(), not a number
    if not (raw.isascii() and raw.isdigit()) or len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise Unprocessable(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(digits)


def choice_param(request: Request, name: str, allowed: Sequence[str]) -> str | None:
    """`?name=` as one of `allowed` (422 naming them otherwise), None when absent."""
    value = request.query_params.get(name)
    if value is not None and value not in allowed:
        raise Unprocessable(f"{name} must be one of {', '.join(allowed)}", field=name)
    return value

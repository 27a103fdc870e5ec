"""Which failed answers are passing: Knative's delivery rule, shared by every sender here (the
dispatcher and replay retry them; the outbox leaves the event queued for the next try)."""

from __future__ import annotations

RETRYABLE = frozenset({404, 408, 409, 429})


def retryable(status: int) -> bool:
    """Whether a failed attempt is tried again: no answer (0), 5xx, 404, 408, 409, 429. Any other
    status is permanent: the same event would be refused again."""
    return status == 0 or status >= 500 or status in RETRYABLE

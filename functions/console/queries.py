"""What the console reads from the order service's tables (orders.saga_instances, orders.saga_history,
orders.orders): sagas counted by state and listed with the operators' filters, those that need a person
first. Read-only; one round trip per page (the statements are pipelined, `saga.transaction`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from saga.store import state_sql
from saga.transaction import Tx

# A saga "timed out" for an operator while its TIMED_OUT is recent: a participant was silent, worth a look.
TIMED_OUT_WITHIN = "1 day"
ATTENTION_LIMIT = 50

_STATE = state_sql("i")
_SAGAS = f"""
WITH sagas AS (
  SELECT i.saga_id, i.saga_type, i.definition_version, i.step, i.step_name, i.attempt, i.parked_reason,
         i.deadline, i.created_at, i.updated_at, i.finished, i.compensating, {_STATE} AS state,
         (NOT i.finished AND i.deadline < now()) IS TRUE AS stuck,
         EXISTS (SELECT 1 FROM orders.saga_history h WHERE h.saga_id = i.saga_id AND h.saga_type = i.saga_type
                 AND h.event = 'TIMED_OUT' AND h.at > now() - interval '{TIMED_OUT_WITHIN}') AS timed_out,
         o.customer_id, o.state AS order_state, o.rejection_reason
  FROM orders.saga_instances i LEFT JOIN orders.orders o ON o.order_id = i.saga_id
  WHERE (%(saga_type)s::text IS NULL OR i.saga_type = %(saga_type)s)
    AND (%(customer)s::text IS NULL OR o.customer_id = %(customer)s)
    AND (%(older)s::float8 IS NULL OR i.created_at < now() - make_interval(secs => %(older)s))
    AND (%(newer)s::float8 IS NULL OR i.created_at >= now() - make_interval(secs => %(newer)s))
)"""
_ORDER = "ORDER BY state = 'PARKED' DESC, stuck DESC, timed_out DESC, finished, updated_at DESC, saga_id"
COUNTS = (f"{_SAGAS} SELECT state, count(*) AS sagas, count(*) FILTER (WHERE stuck) AS stuck, "
          "count(*) FILTER (WHERE timed_out) AS timed_out FROM sagas GROUP BY state")
LIST = f"{_SAGAS} SELECT * FROM sagas WHERE %(state)s::text IS NULL OR state = %(state)s {_ORDER} LIMIT %(limit)s"
ATTENTION = f"{_SAGAS} SELECT * FROM sagas WHERE state = 'PARKED' OR stuck OR timed_out {_ORDER} LIMIT %(attention)s"
NOW = "SELECT now()"


@dataclass(frozen=True, kw_only=True)
class Filters:
    saga_type: str | None = None
    state: str | None = None
    customer: str | None = None
    older_than: float | None = None  # seconds since the saga started
    newer_than: float | None = None
    limit: int = 100


def overview(tx: Tx, filters: Filters) -> dict[str, Any]:
    """Counts by state (the filters but the state's), the sagas that need a person (parked, stuck past
    their deadline, timed out lately) and the filtered list, those first."""
    params = {"saga_type": filters.saga_type, "customer": filters.customer, "older": filters.older_than,
              "newer": filters.newer_than, "state": filters.state, "limit": filters.limit,
              "attention": ATTENTION_LIMIT}
    counts, attention, listed, now = (tx.query(COUNTS, params), tx.query(ATTENTION, params), tx.query(LIST, params),
                                      tx.query(NOW))
    by_state = {row.state: row for row in counts.all()}
    moment = now.scalar()
    return {
        "counts": {state: row.sagas for state, row in by_state.items()},
        "total": sum(row.sagas for row in by_state.values()),
        "needsAPerson": {
            "parked": by_state["PARKED"].sagas if "PARKED" in by_state else 0,
            "stuck": sum(row.stuck for row in by_state.values()),
            "timedOut": sum(row.timed_out for row in by_state.values()),
            "sagas": [_view(row) for row in attention.all()],
        },
        "sagas": [_view(row) for row in listed.all()],
        "now": moment.isoformat() if moment is not None else None,
    }


def _view(row: Any) -> dict[str, Any]:
    attention = "parked" if row.state == "PARKED" else "stuck" if row.stuck else "timed-out" if row.timed_out else None
    return {
        "sagaId": row.saga_id, "sagaType": row.saga_type, "definitionVersion": row.definition_version,
        "state": row.state, "currentStep": row.step, "stepName": row.step_name, "compensating": row.compensating,
        "attempt": row.attempt,
        "parkedReason": row.parked_reason, "needsAPerson": attention,
        "deadline": row.deadline.isoformat() if row.deadline is not None else None,
        "createdAt": row.created_at.isoformat(), "updatedAt": row.updated_at.isoformat(),
        "customerId": row.customer_id, "orderState": row.order_state, "rejectionReason": row.rejection_reason,
    }

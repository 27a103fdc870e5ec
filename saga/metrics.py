"""What every function counts, in Prometheus' terms (`prometheus-client`, served on `/metrics` by
`functions.platform.serve`).

Saga metrics are read off the history entries a transaction wrote, once it has committed (`Tx.after_commit`):
the history is what happened, so the two cannot disagree, and a transaction that rolled back (and runs
again) counts nothing. Latencies come from the entries too: the engine records how long a reply was
awaited (`waited`, on PostgreSQL's clock) and how long a saga took (`took`).

Counters live in the process: a pod that scales to zero takes its counts with it, which Prometheus'
`rate()`/`increase()` read as a counter reset. Labels are bounded: saga types, step names, reply
refusal codes, consumers, Triggers; never a saga or event id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from saga.engine import HistoryEntry

# From a local step's few milliseconds to a participant that answers after its 60 s deadline.
_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A saga: tens of milliseconds when healthy, minutes through retries, hours when a person had to resume it.
_SAGA_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

SAGAS_STARTED = Counter("saga_started", "Sagas started", ["saga_type", "version"])
SAGAS_FINISHED = Counter("saga_finished", "Sagas finished, by outcome (COMPLETED or COMPENSATED)",
                         ["saga_type", "outcome"])
SAGA_DURATION = Histogram("saga_duration_seconds", "From a saga's start to its end", ["saga_type", "outcome"],
                          buckets=_SAGA_BUCKETS)
STEP_LATENCY = Histogram("saga_step_seconds", "From a command's send to its accepted reply",
                         ["saga_type", "step", "direction"], buckets=_STEP_BUCKETS)
COMMANDS_SENT = Counter("saga_commands_sent", "Commands and compensations sent; `send` is first, retry, resend "
                        "(unanswered, same id) or resume", ["saga_type", "direction", "send"])
REPLIES_IGNORED = Counter("saga_replies_ignored", "Replies the engine refused, by reason", ["saga_type", "reason"])
TIMEOUTS = Counter("saga_timeouts", "Steps whose participant did not answer by the deadline", ["saga_type", "step"])
RETRIES_SCHEDULED = Counter("saga_retries_scheduled", "A compensation or a step after the pivot failed: sent again "
                            "after a backoff", ["saga_type", "step"])
PARKED = Counter("saga_parked", "Sagas that ran out of retries and wait for a person", ["saga_type", "step"])
RESUMED = Counter("saga_resumed", "Parked sagas a person resumed", ["saga_type"])
SWEEP_ACTIONS = Counter("saga_sweep_actions", "What the stuck-saga sweep did to an overdue saga: timed_out, "
                        "resent, retried, parked or failed (could not act: counted against its budget)",
                        ["saga_type", "action"])
SWEEP_LATENESS = Histogram("saga_sweep_lateness_seconds", "How long past its deadline the sweep took a saga",
                           ["saga_type"], buckets=(0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0))

EVENTS_HANDLED = Counter("saga_events_handled", "Events a consumer answered: handled (2xx), rejected (4xx: the "
                         "dispatcher dead-letters it) or failed (5xx: redelivered)", ["consumer", "result"])
INBOX_DUPLICATES = Counter("saga_inbox_duplicates", "Events a consumer had handled before (answered from its inbox)",
                           ["consumer"])

OUTBOX_PUBLISHED = Counter("saga_outbox_published", "Events the broker acknowledged", ["outbox"])
OUTBOX_REFUSED = Counter("saga_outbox_refused", "Events the broker refused for good, moved to the parked table",
                         ["outbox", "status"])
OUTBOX_BACKLOG = Gauge("saga_outbox_backlog", "Events waiting in the outbox at the last sweep", ["outbox"])
OUTBOX_OLDEST_AGE = Gauge("saga_outbox_oldest_age_seconds", "Age of the oldest waiting event at the last sweep "
                          "(0 when none)", ["outbox"])

_SENT = {"COMMAND_SENT": "invoke", "COMPENSATION_SENT": "compensate"}


def observe_history(saga_type: str, history: Sequence[HistoryEntry]) -> None:
    """Count what a committed transaction recorded of one saga."""
    for entry in history:
        event, detail = str(entry.event), entry.detail
        swept = "overdueBy" in detail  # written by the sweep (`SagaEngine.expire`)
        if swept:
            SWEEP_LATENESS.labels(saga_type).observe(detail["overdueBy"])
        if event == "STARTED":
            SAGAS_STARTED.labels(saga_type, str(detail.get("definitionVersion", ""))).inc()
        elif event == "FINISHED":
            outcome = detail.get("outcome", "")
            SAGAS_FINISHED.labels(saga_type, outcome).inc()
            if "took" in detail:
                SAGA_DURATION.labels(saga_type, outcome).observe(detail["took"])
        elif event == "REPLY_RECEIVED":
            if "waited" in detail:
                STEP_LATENCY.labels(saga_type, detail.get("stepName", entry.name), detail.get("direction", "")).observe(
                    detail["waited"])
        elif event in _SENT:
            send = ("resume" if detail.get("resumed") else "resend" if detail.get("resent")
                    else "retry" if detail.get("attempt", 1) > 1 else "first")
            COMMANDS_SENT.labels(saga_type, _SENT[event], send).inc()
            if swept:
                SWEEP_ACTIONS.labels(saga_type, "resent" if detail.get("resent") else "retried").inc()
        elif event == "REPLY_IGNORED":
            REPLIES_IGNORED.labels(saga_type, detail.get("code", "other")).inc()
        elif event == "TIMED_OUT":
            TIMEOUTS.labels(saga_type, entry.name).inc()
            if swept:
                SWEEP_ACTIONS.labels(saga_type, "timed_out").inc()
        elif event == "RETRY_SCHEDULED":
            RETRIES_SCHEDULED.labels(saga_type, entry.name).inc()
        elif event == "PARKED":
            PARKED.labels(saga_type, entry.name).inc()
            if swept:
                SWEEP_ACTIONS.labels(saga_type, "parked").inc()
        elif event == "RESUMED":
            RESUMED.labels(saga_type).inc()
        elif event == "SWEEP_FAILED":
            SWEEP_ACTIONS.labels(saga_type, "failed").inc()

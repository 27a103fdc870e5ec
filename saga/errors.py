"""The framework's errors: one root, structured attributes, an explicit retryable flag.

Business outcomes (stock limit, credit exceeded) are replies, never exceptions. These are for what
cannot be processed: an unreadable message (not retryable: straight to the dead-letter sink) or a
passing infrastructure fault (retryable: the dispatcher delivers again).
"""

from __future__ import annotations


class SagaError(Exception):
    """Root of the framework's errors."""

    retryable: bool = False
    status: int = 500


class InvalidMessage(SagaError, ValueError):
    """An event that can never be processed: malformed, wrong type, missing extension."""

    status = 400


class UnknownSaga(SagaError, LookupError):
    """A reply names a saga instance that does not exist."""

    status = 422


class UnknownDefinition(SagaError):
    """A saga started on a definition version this build does not have (or that changed under it): it
    cannot be moved until that version is deployed again; the sweep parks it meanwhile."""

    status = 500


class NotParked(SagaError):
    """Resume asked of a saga that is not PARKED; `state` says what it is."""

    status = 409

    def __init__(self, message: str, *, state: str) -> None:
        super().__init__(message)
        self.state = state


class TransientFailure(SagaError):
    """An infrastructure fault (database restarting, broker unreachable): retry later."""

    retryable = True
    status = 503

"""Account business rules, as saga participant actions: each queues the reads it needs and returns
the decision (`saga.participant`), run inside the delivery's transaction."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from functions.account.messages import (
    CreditReleased,
    CreditReserved,
    CustomerCreditLimitExceeded,
    CustomerNotFound,
    ReleaseCredit,
    ReserveCredit,
    UserRegistered,
)
from saga.messages import Reply
from saga.participant import SagaRef
from saga.transaction import Tx

ACCOUNT = "SELECT customer_id, credit_limit, available_credit FROM accounts.accounts WHERE customer_id = %s FOR UPDATE"
HELD = ("SELECT customer_id, amount, state FROM accounts.credit_reservations WHERE saga_type = %s AND saga_id = %s "
        "FOR UPDATE")
SET_AVAILABLE = "UPDATE accounts.accounts SET available_credit = %s WHERE customer_id = %s"
GIVE_BACK = "UPDATE accounts.accounts SET available_credit = available_credit + %s WHERE customer_id = %s"
RESERVE = ("INSERT INTO accounts.credit_reservations (saga_type, saga_id, customer_id, amount, state) "
           "VALUES (%s, %s, %s, %s, 'RESERVED')")
RELEASE = "UPDATE accounts.credit_reservations SET state = 'RELEASED' WHERE saga_type = %s AND saga_id = %s"
MARK_RELEASED = ("INSERT INTO accounts.credit_reservations (saga_type, saga_id, customer_id, amount, state) "
                 "VALUES (%s, %s, %s, 0, 'RELEASED') ON CONFLICT DO NOTHING")
OPEN = ("INSERT INTO accounts.accounts (customer_id, credit_limit, available_credit) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING")
DESCRIBE = "SELECT customer_id, credit_limit, available_credit FROM accounts.accounts WHERE customer_id = %s"


def reserve_credit(tx: Tx, saga: SagaRef, command: ReserveCredit) -> Callable[[], Reply]:
    account, held = tx.query(ACCOUNT, (command.customer_id,)), tx.query(HELD, (saga.type, saga.id))

    def decide() -> Reply:
        found, reservation = account.one(), held.one()
        if found is None:
            return CustomerNotFound()
        if reservation is not None and reservation.state == "RESERVED":
            # This saga already holds credit (a command re-sent under another id): never twice.
            return CreditReserved(available_credit=found.available_credit)
        if reservation is not None:
            # RELEASED: the saga timed out and was compensated before this (late) command.
            return CustomerCreditLimitExceeded(available_credit=found.available_credit)
        if command.amount <= 0 or found.available_credit < command.amount:
            return CustomerCreditLimitExceeded(available_credit=found.available_credit)
        remaining = found.available_credit - command.amount
        tx.execute(SET_AVAILABLE, (remaining, found.customer_id))
        tx.execute(RESERVE, (saga.type, saga.id, found.customer_id, command.amount))
        return CreditReserved(available_credit=remaining)

    return decide


def release_credit(tx: Tx, saga: SagaRef, command: ReleaseCredit) -> Callable[[], Reply]:
    """Give back what the saga holds; with no reservation, leave a RELEASED marker so a late
    ReserveCredit for the same saga reserves nothing. The account row is locked first, as
    reserve_credit does, so the two never interleave."""
    holder = SagaRef(command.held_by or saga.type, saga.id)
    account, held = tx.query(ACCOUNT, (command.customer_id,)), tx.query(HELD, (holder.type, holder.id))

    def decide() -> Reply:
        found, reservation = account.one(), held.one()
        if reservation is None:
            if found is not None:
                tx.execute(MARK_RELEASED, (holder.type, holder.id, command.customer_id))
            return CreditReleased(amount=Decimal(0))
        if reservation.state == "RELEASED":
            return CreditReleased(amount=Decimal(0))
        tx.execute(GIVE_BACK, (reservation.amount, reservation.customer_id))
        tx.execute(RELEASE, (holder.type, holder.id))
        return CreditReleased(amount=reservation.amount)

    return decide


def provision_account(tx: Tx, event: UserRegistered, initial_credit: Decimal) -> None:
    tx.execute(OPEN, (event.customer_id, initial_credit, initial_credit))


def describe_account(tx: Tx, customer_id: str) -> dict[str, Any] | None:
    account = tx.query(DESCRIBE, (customer_id,)).one()
    if account is None:
        return None
    return {
        "customerId": account.customer_id,
        "creditLimit": str(account.credit_limit),
        "availableCredit": str(account.available_credit),
    }

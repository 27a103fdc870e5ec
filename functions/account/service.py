"""Account business rules: plain functions over a connection, called inside the delivery transaction."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from functions.account.messages import (
    CreditReleased,
    CreditReserved,
    CustomerCreditLimitExceeded,
    CustomerNotFound,
    ReleaseCredit,
    ReserveCredit,
    UserRegistered,
)
from functions.account.schema import accounts, credit_reservations, open_account
from saga.messages import Reply


def reserve_credit(tx: sa.Connection, saga_id: str, command: ReserveCredit) -> Reply:
    account = tx.execute(
        sa.select(accounts).where(accounts.c.customer_id == command.customer_id).with_for_update()
    ).first()
    if account is None:
        return CustomerNotFound()
    held = tx.execute(
        sa.select(credit_reservations.c.state).where(credit_reservations.c.saga_id == saga_id)
    ).scalar_one_or_none()
    if held == "RESERVED":
        # This saga already holds credit (a command re-sent under another id): never twice.
        return CreditReserved(available_credit=account.available_credit)
    if held == "RELEASED":
        # The saga timed out and was compensated before this (late) command: reserve nothing.
        return CustomerCreditLimitExceeded(available_credit=account.available_credit)
    if command.amount <= 0 or account.available_credit < command.amount:
        return CustomerCreditLimitExceeded(available_credit=account.available_credit)
    remaining = account.available_credit - command.amount
    tx.execute(
        sa.update(accounts).where(accounts.c.customer_id == account.customer_id).values(available_credit=remaining)
    )
    tx.execute(
        sa.insert(credit_reservations).values(
            saga_id=saga_id, customer_id=account.customer_id, amount=command.amount, state="RESERVED"
        )
    )
    return CreditReserved(available_credit=remaining)


def release_credit(tx: sa.Connection, saga_id: str, command: ReleaseCredit) -> Reply:
    """Give back what the saga holds; with no reservation, leave a RELEASED marker so a late
    ReserveCredit for the same saga reserves nothing. The account row is locked first, as
    reserve_credit does, so the two never interleave."""
    account = tx.execute(
        sa.select(accounts.c.customer_id).where(accounts.c.customer_id == command.customer_id).with_for_update()
    ).first()
    held = tx.execute(
        sa.select(credit_reservations).where(credit_reservations.c.saga_id == saga_id).with_for_update()
    ).first()
    if held is None:
        if account is not None:
            tx.execute(
                insert(credit_reservations)
                .values(saga_id=saga_id, customer_id=command.customer_id, amount=0, state="RELEASED")
                .on_conflict_do_nothing()
            )
        return CreditReleased(amount=Decimal(0))
    if held.state == "RELEASED":
        return CreditReleased(amount=Decimal(0))
    tx.execute(
        sa.update(accounts)
        .where(accounts.c.customer_id == held.customer_id)
        .values(available_credit=accounts.c.available_credit + held.amount)
    )
    tx.execute(
        sa.update(credit_reservations).where(credit_reservations.c.saga_id == saga_id).values(state="RELEASED")
    )
    return CreditReleased(amount=held.amount)


def provision_account(tx: sa.Connection, event: UserRegistered, initial_credit: Decimal) -> None:
    open_account(tx, event.customer_id, initial_credit)


def describe_account(tx: sa.Connection, customer_id: str) -> dict[str, object] | None:
    account = tx.execute(sa.select(accounts).where(accounts.c.customer_id == customer_id)).first()
    if account is None:
        return None
    return {
        "customerId": account.customer_id,
        "creditLimit": str(account.credit_limit),
        "availableCredit": str(account.available_credit),
    }

"""Account business rules: plain functions over a connection, called inside the delivery transaction."""

from __future__ import annotations

from decimal import Decimal

import sqlalchemy as sa

from functions.account.messages import (
    CreditReserved,
    CustomerCreditLimitExceeded,
    CustomerNotFound,
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
    if held is not None:
        # This saga already holds credit (a command re-sent under another id): never twice.
        return CreditReserved(available_credit=account.available_credit)
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

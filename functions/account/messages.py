"""The account participant's API: the commands it accepts, the replies it sends, and the event it consumes."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import ClassVar

from saga.messages import Command, Outcome, Reply

USER_REGISTERED = "io.knativesaga.user.registered"


@dataclasses.dataclass(frozen=True, kw_only=True)
class CreditReleased(Reply):
    amount: Decimal  # 0 when there was nothing to release


@dataclasses.dataclass(frozen=True, kw_only=True)
class CreditReserved(Reply):
    available_credit: Decimal


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomerNotFound(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE


@dataclasses.dataclass(frozen=True, kw_only=True)
class CustomerCreditLimitExceeded(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE
    available_credit: Decimal


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReserveCredit(Command):
    TYPE: ClassVar[str] = "io.knativesaga.account.reservecredit"
    HANDLER: ClassVar[str] = "/functions/account-reserve-credit"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (CreditReserved, CustomerNotFound, CustomerCreditLimitExceeded)
    customer_id: str
    amount: Decimal


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReleaseCredit(Command):
    """Compensation of ReserveCredit, sent when the saga gave up waiting for its reply: gives back
    whatever the saga holds (nothing is fine) and bars a late ReserveCredit of the same saga."""

    TYPE: ClassVar[str] = "io.knativesaga.account.releasecredit"
    HANDLER: ClassVar[str] = "/functions/account-release-credit"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (CreditReleased,)
    customer_id: str
    # The saga type whose reservation (under the same saga id) to release; None: the sender's own. An
    # order's CancelOrderSaga releases what its CreateOrderSaga reserved.
    held_by: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserRegistered:
    """Published by auth when a user registers; the account is provisioned from it."""

    user_id: str
    customer_id: str
    username: str

"""The goods participant's API: the commands it accepts and the replies it sends."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import ClassVar

from saga.messages import Command, Outcome, Reply


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoodsReserved(Reply):
    unit_price: Decimal  # the authoritative price; the saga checks the order total against it


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoodsStockLimit(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE
    available: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoodsNotFound(Reply):
    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoodsReleased(Reply):
    quantity: int  # 0 when there was nothing to release


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoodsReleaseRefused(Reply):
    """Nothing was given back (the item is being counted): the saga tries again later."""

    OUTCOME: ClassVar[Outcome] = Outcome.FAILURE
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReserveGoods(Command):
    TYPE: ClassVar[str] = "io.knativesaga.goods.reserve"
    HANDLER: ClassVar[str] = "/functions/goods-reserve"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (GoodsReserved, GoodsStockLimit, GoodsNotFound)
    goods_id: int
    quantity: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReleaseGoods(Command):
    """Compensation of ReserveGoods: releases whatever the saga reserved (nothing is fine)."""

    TYPE: ClassVar[str] = "io.knativesaga.goods.release"
    HANDLER: ClassVar[str] = "/functions/goods-release"
    REPLIES: ClassVar[tuple[type[Reply], ...]] = (GoodsReleased, GoodsReleaseRefused)
    goods_id: int
    # The saga type whose reservation (under the same saga id) to release; None: the sender's own. An
    # order's CancelOrderSaga releases what its CreateOrderSaga reserved.
    held_by: str | None = None

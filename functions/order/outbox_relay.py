"""order-outbox-relay (functions-framework target `outbox_relay`): the PingSource sweep of the
order outbox, for what a crash or an unreachable broker left there after commit."""

from __future__ import annotations

from functions_framework import aio

from functions.platform.events import sweep_target
from saga.outbox import Outbox

outbox_relay = aio.http(sweep_target(Outbox("orders.outbox")))

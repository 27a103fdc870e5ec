"""auth-outbox-relay (functions-framework target `outbox_relay`): the PingSource sweep of the auth
outbox (UserRegistered events a crash or an unreachable broker left there)."""

from __future__ import annotations

from functions_framework import aio

from functions.platform.events import sweep_target
from saga.outbox import Outbox

outbox_relay = aio.http(sweep_target(Outbox("auth.outbox")))

"""The shapes of the ids in paths and queries: a value of another shape cannot name anything, so it
is answered without a query (and never reaches PostgreSQL, which refuses some strings outright)."""

from __future__ import annotations

import re

CUSTOMER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ORDER_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_INTEGER_ID = 2**31 - 1  # PostgreSQL integer
SAGA_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

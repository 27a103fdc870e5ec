"""order-saga-timeouts (functions-framework target `saga_timeouts`): the PingSource sweep over every
order saga type: it times out sagas whose participant has not answered by the step deadline, re-sends
an overdue compensation or retriable step and sends a due retry, each within the retry budget (past it,
the saga is PARKED). Answers 202 with no body: a body that is not a CloudEvent counts as a failed
delivery."""

from __future__ import annotations

import logging

from functions_framework import aio
from starlette.requests import Request
from starlette.responses import Response

from functions.order import service
from functions.platform.config import settings
from functions.platform.database import database
from functions.platform.events import publish_after_commit

log = logging.getLogger(__name__)


@aio.http
async def saga_timeouts(request: Request) -> Response:
    db = database(settings().database_url)
    queued = await db.call(service.expire_overdue, db)
    if queued:
        log.info("timed out or re-sent %d overdue saga step(s)", len(queued))
        await publish_after_commit(service.outbox, queued)
    return Response(status_code=202)

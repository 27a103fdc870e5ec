"""Resuming a PARKED saga over HTTP, as order-api's `POST /admin/sagas/{id}/resume` and the console's
button both do: `service.resume_saga` in one transaction, each refusal as its problem, the command
published after the commit (what is not published, the outbox sweep sends)."""

from __future__ import annotations

from cloudevents.http import CloudEvent

from functions.order import service
from functions.platform.events import publish_after_commit
from functions.platform.ids import ORDER_ID
from functions.platform.problems import Conflict, NotFound
from saga.errors import InvalidMessage, NotParked, UnknownDefinition, UnknownSaga
from saga.transaction import Database


async def resume(database: Database, saga_id: str, *, by: str, saga_type: str | None) -> CloudEvent:
    """The command the resumed saga sent. NotFound, or Conflict when it cannot be resumed (nothing changed)."""
    if not ORDER_ID.fullmatch(saga_id):
        raise NotFound(f"no saga {saga_id}")
    try:
        command = await database.run(lambda tx: service.resume_saga(tx, saga_id, by=by, saga_type=saga_type))
    except UnknownSaga as exc:
        raise NotFound(f"no saga {saga_id}") from exc
    except service.AmbiguousSaga as exc:
        raise Conflict(f"{exc} (?type=)", field="type") from exc
    except NotParked as exc:
        raise Conflict(f"saga {saga_id} is {exc.state}; only a PARKED saga can be resumed") from exc
    except InvalidMessage as exc:  # what parked it is not fixed: nothing changed
        raise Conflict(f"saga {saga_id} cannot be resumed yet: its data does not decode ({exc})") from exc
    except UnknownDefinition as exc:  # it started on a version this build lacks: deploy one that has it
        raise Conflict(f"saga {saga_id} cannot be resumed by this build: {exc}") from exc
    await publish_after_commit(service.outbox, [command])
    return command

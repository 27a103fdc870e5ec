"""`saga docs`: writes the generated documents, each saga version's diagram (docs/sagas/) and the AsyncAPI
document of every event (docs/asyncapi.yaml), from the order service's saga definitions and the message
classes (`saga.docs`); `--check` writes nothing and fails naming the stale ones, as a unit test does."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import click

from functions.account.messages import USER_REGISTERED, UserRegistered
from saga.docs import EventDoc, generated, stale, write
from saga.eventing.topology import broker_topic

ROOT = Path(__file__).resolve().parents[1]
BROKER_TOPIC = broker_topic("knative-saga", "saga")  # knative/broker.yaml (the unit test compares them)
# The events that are neither a saga's command nor a reply; their receivers are checked against the
# Triggers and PingSources of knative/ by the unit test.
EVENTS = (
    EventDoc(name="UserRegistered", event_type=USER_REGISTERED, source="/functions/auth-api", payload=UserRegistered,
             summary="A user registered: their credit account is opened from it.",
             sender="auth-api (through its outbox)", receivers=("account-provision",)),
    EventDoc(name="Ping", event_type="dev.knative.sources.ping", source=None, payload=None,
             summary="Every minute, a sweep: the outbox relays publish what is left, the timeouts act on overdue "
                     "sagas.",
             sender="PingSource", receivers=("order-outbox-relay", "auth-outbox-relay", "order-saga-timeouts"),
             knative_source=True),
)


def documents() -> dict[str, str]:
    """Every generated file (path under the project root -> text) of this build."""
    from functions.order import service  # builds the order sagas' engines: only when asked

    return generated(
        list(service.engines.values()), EVENTS, title="knative-saga events", version=metadata.version("knative-saga"),
        description="Every CloudEvent the functions send and receive: the sagas' commands with the participants' "
                    "replies, the domain events, and the Knative sources' events. Data is JSON; money a decimal "
                    "string. docs/events.md tells the story; the saga diagrams are in docs/sagas/.",
        broker_topic=BROKER_TOPIC)


@click.command("docs")
@click.option("--check", is_flag=True, help="Write nothing; exit 1 naming the files that are stale.")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), default=ROOT, show_default="this checkout")
def docs(check: bool, root: Path) -> None:
    """Generate docs/sagas/<SagaType>-v<version>.md (Mermaid) and docs/asyncapi.yaml from the code."""
    files = documents()
    if check:
        if outdated := stale(root, files):
            raise click.ClickException(f"stale: {', '.join(outdated)}; regenerate with `saga docs`")
        return
    for path in write(root, files):
        click.echo(f"updated {path}")

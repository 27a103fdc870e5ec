"""`saga replay`: the operator's command (docs/replay.md). Locally it reads the running stack's
routing from `.local/dev/topology.json`; inside the cluster (the replay Job) from the Kubernetes API."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from saga.eventing.topology import Topology, TopologyError, Trigger, from_kubernetes
from saga.progress import Progress
from saga.replay.engine import ConsumedWatch, Replayer, Tally
from saga.replay.positions import Start

REPARKED_EXIT = 3  # something failed again and is (back) in the dead-letter topic


def _start(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Start | None:
    if value is None:
        return None
    try:
        return Start.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("replay")
@click.option("--trigger", "trigger_names", multiple=True, metavar="NAME", help="A Trigger to replay (repeatable).")
@click.option("--all-triggers", is_flag=True, help="Every Trigger of the broker.")
@click.option("--from", "start", metavar="earliest|RFC3339|OFFSET", callback=_start,
              help="Where to start in each partition: earliest, a time (2026-11-25T10:00:00Z), or an offset.")
@click.option("--dry-run", is_flag=True, help="Only list what would be re-delivered.")
@click.option("--wait", is_flag=True, help="Then block until every Trigger has consumed what the replay wrote.")
@click.option("--dead-letters", is_flag=True, help="Redrive the events parked in the dead-letter topic.")
@click.option("--saga", "saga_id", metavar="ID", help="Send one saga's events, in order, to --to.")
@click.option("--to", "sink_url", metavar="URL", help="Where --saga sends the events.")
@click.option("--discard-replies", is_flag=True,
              help="Do not publish the subscribers' replies (rebuilding a read model: effects only).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600.0, show_default=True,
              help="Seconds --wait may block.")
@click.option("--topology", "topology_file", type=click.Path(path_type=Path, dir_okay=False),
              envvar="SAGA_REPLAY_TOPOLOGY", help="The local stack's routing [default: .local/dev/topology.json].")
@click.option("--broker", metavar="NAMESPACE/NAME", envvar="SAGA_REPLAY_BROKER",
              help="Read the Triggers of this Broker from the Kubernetes API (in a pod).")
@click.option("--bootstrap", envvar="KAFKA_BOOTSTRAP_SERVERS", help="Kafka bootstrap servers (with --broker).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of a table.")
def replay(trigger_names: tuple[str, ...], all_triggers: bool, start: Start | None, dry_run: bool, wait: bool,
           dead_letters: bool, saga_id: str | None, sink_url: str | None, discard_replies: bool, timeout: float,
           topology_file: Path | None, broker: str | None, bootstrap: str | None, as_json: bool) -> None:
    """Re-deliver the broker's events to Triggers, redrive dead letters, or trace one saga.

    \b
      saga replay --trigger order-saga --from earliest --wait
      saga replay --all-triggers --from 2026-11-25T10:00:00Z --dry-run
      saga replay --dead-letters [--trigger goods-reserve]
      saga replay --saga ORDER_ID --to http://127.0.0.1:9999/
    """
    history = bool(trigger_names or all_triggers) and not dead_letters
    if sum((bool(saga_id), dead_letters, history)) != 1:
        raise click.UsageError("choose one: --trigger/--all-triggers (history), --dead-letters, or --saga")
    if trigger_names and all_triggers:
        raise click.UsageError("--trigger and --all-triggers exclude each other")
    if history and start is None:
        raise click.UsageError("--from is required: earliest, an RFC 3339 time, or an offset")
    if saga_id is not None and sink_url is None and not dry_run:
        raise click.UsageError("--saga needs --to URL (or --dry-run to list the events)")
    try:
        topology = _topology(topology_file, broker, bootstrap)
        triggers = _triggers(topology, trigger_names, dead_letters)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from exc
    replayer = Replayer(topology, discard_replies=discard_replies)
    # On stderr: a bar on a terminal; plain lines in logs and with --json, whose stdout stays one document.
    progress = Progress("replay", plain=as_json)
    try:
        if saga_id is not None:
            _emit(as_json, _trace(replayer, saga_id, sink_url, dry_run))
            return
        began = time.monotonic()
        if dead_letters:
            tallies = _redrive(replayer, triggers, start, dry_run, progress)
        else:
            assert start is not None
            verb = "dry run for" if dry_run else "re-delivering"
            with progress.phase(f"{verb} {_names(triggers)}", unit="events") as phase:
                tallies = replayer.replay(triggers, start, dry_run=dry_run, progress=phase.advance,
                                          on_plan=phase.plan)
        report = _report("dead-letters" if dead_letters else "replay", start, dry_run, tallies)
        report["seconds"] = round(time.monotonic() - began, 3)
        if wait and not dry_run:
            report["waited_seconds"] = _wait(topology, replayer, timeout, progress)
        _emit(as_json, report)
        if not dry_run and report["total"]["dead_lettered"]:
            sys.exit(REPARKED_EXIT)
    except (LookupError, TimeoutError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        replayer.close()


def _topology(topology_file: Path | None, broker: str | None, bootstrap: str | None) -> Topology:
    if broker is not None:
        namespace, _, name = broker.partition("/")
        if not namespace or not name:
            raise click.BadParameter("expected NAMESPACE/NAME", param_hint="--broker")
        if not bootstrap:
            raise click.UsageError("--broker needs --bootstrap or KAFKA_BOOTSTRAP_SERVERS")
        return from_kubernetes(namespace, name, bootstrap)
    topology = Topology.read(topology_file or Path(".local/dev/topology.json"))
    return topology.with_bootstrap(bootstrap) if bootstrap else topology


def _triggers(topology: Topology, names: tuple[str, ...], dead_letters: bool) -> list[Trigger]:
    if names:
        return [topology.trigger(name) for name in names]
    if dead_letters:
        return [t for t in topology.triggers if t.delivery.dead_letter_topic]
    return list(topology.triggers)


def _trace(replayer: Replayer, saga_id: str, sink_url: str | None, dry_run: bool) -> dict[str, Any]:
    found = replayer.saga_events(saga_id)
    if not found:
        raise click.ClickException(f"no event of saga {saga_id} in {replayer.topology.topic}")
    statuses = replayer.send([e for _, e in found], sink_url) if sink_url and not dry_run else [None] * len(found)
    seen: set[tuple[str, str]] = set()
    events = []
    for (message, event), status in zip(found, statuses, strict=True):
        key = (event["source"], event["id"])
        events.append({"partition": message.partition(), "offset": message.offset(), "id": event["id"],
                       "type": event["type"], "step": event.get("sagastep"), "reply": event.get("replytype"),
                       "duplicate": key in seen, "status": status})
        seen.add(key)
    return {"mode": "saga", "saga": saga_id, "to": sink_url, "dry_run": dry_run, "events": events}


def _report(mode: str, start: Start | None, dry_run: bool, tallies: dict[str, Tally]) -> dict[str, Any]:
    rows = {name: tally.as_dict() for name, tally in tallies.items()}
    total = {key: sum(r[key] for r in rows.values()) for key in ("matched", "delivered", "replies", "dead_lettered")}
    return {"mode": mode, "from": str(start) if start else None, "dry_run": dry_run, "triggers": rows, "total": total}


def _names(triggers: Sequence[Trigger]) -> str:
    if 0 < len(triggers) <= 2:
        return ", ".join(t.name for t in triggers)
    return f"{len(triggers)} Triggers"


def _redrive(replayer: Replayer, triggers: list[Trigger], start: Start | None, dry_run: bool,
             progress: Progress) -> dict[str, Tally]:
    """One Trigger at a time, each its own phase: each has its own dead letters and redrive position."""
    tallies: dict[str, Tally] = {}
    verb = "dry run for" if dry_run else "redriving"
    for trigger in triggers:
        with progress.phase(f"{verb} {trigger.name}'s dead letters", unit="events") as phase:
            tallies |= replayer.redrive([trigger], start, dry_run=dry_run, progress=phase.advance,
                                        on_plan=phase.plan)
    return tallies


def _wait(topology: Topology, replayer: Replayer, timeout: float, progress: Progress) -> float:
    began = time.monotonic()
    watch = ConsumedWatch(topology, replayer.kafka)
    try:
        targets = watch.targets()
        with progress.phase("waiting for the Triggers", unit="records") as phase:
            watch.wait(targets, timeout, phase.reached)
    finally:
        watch.close()
    return round(time.monotonic() - began, 3)


def _emit(as_json: bool, report: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(report))
        return
    if report["mode"] == "saga":
        for event in report["events"]:
            status = "" if event["status"] is None else f"  -> {event['status']}"
            again = "  (duplicate: same source and id as above)" if event["duplicate"] else ""
            where = f"{event['partition']}:{event['offset']}"
            click.echo(f"{where}  {event['type']}  {event['reply'] or ''}{status}{again}")
        return
    total = report["total"]
    if report["mode"] == "dead-letters":
        where = f"from {report['from']}" if report["from"] else "since the last redrive"
        if report["dry_run"]:
            click.echo(f"dead letters {where}: {total['matched']} would be redriven")
        else:
            click.echo(f"dead letters {where}: redriven {total['matched']}, succeeded {total['delivered']}, "
                       f"parked again {total['dead_lettered']}")
    else:
        verb = "would re-deliver" if report["dry_run"] else "re-delivered"
        click.echo(f"replay from {report['from']}: {verb} {total['matched']} event(s)")
    click.echo(f"{'trigger':<28}{'matched':>8}{'ok':>8}{'replies':>8}{'parked':>8}  first .. last")
    for name, row in report["triggers"].items():
        click.echo(f"{name:<28}{row['matched']:>8}{row['delivered']:>8}{row['replies']:>8}{row['dead_lettered']:>8}"
                   f"  {row['first'] or '-'} .. {row['last'] or '-'}")
        for kind, count in row["types"].items():
            click.echo(f"{'':<4}{count:>8}  {kind}")
    if "waited_seconds" in report:
        click.echo(f"consumed by every Trigger after {report['waited_seconds']} s")


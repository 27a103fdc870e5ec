"""The framework's tables, declared once in SQLAlchemy Core for creating them (`saga db-init`, each
service's schema module) and for the tools that read them (tests, the benchmark, the chaos checker).
The functions themselves run plain SQL against them (`saga.transaction`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events a consumer handled, keyed by (consumer, source, id), with the reply it gave."""
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_source", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        # The reply this handling produced (structured CloudEvent JSON), or NULL for none.
        sa.Column("reply", JSONB, nullable=True),
    )


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """Events committed with the change that caused them, until the broker acknowledged them."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("event", JSONB, nullable=False),
    )


def parked_events_table(metadata: sa.MetaData) -> sa.Table:
    """Outbox events the broker refused for good (a 4xx), moved out of the outbox so they hold back
    nothing behind them; kept with the broker's answer for an operator."""
    return sa.Table(
        "outbox_parked",
        metadata,
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("event", JSONB, nullable=False),
    )


def saga_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Saga instances and their append-only history."""
    instances = sa.Table(
        "saga_instances",
        metadata,
        # Keyed by type and id: an order's create and cancel sagas share the order's id.
        sa.Column("saga_type", sa.Text, primary_key=True),
        sa.Column("saga_id", sa.Text, primary_key=True),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("compensating", sa.Boolean, nullable=False),
        sa.Column("finished", sa.Boolean, nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("awaiting", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        # Sends of the current step's command or compensation, the first included (the retry budget).
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        # Set while PARKED (out of retries, waiting for a person): why.
        sa.Column("parked_reason", sa.Text, nullable=True),
        # The definition version it started on and runs on to its end, and its current step by name.
        sa.Column("definition_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("step_name", sa.Text, nullable=True),
        # The W3C trace context the saga started in: what the sweep or a resume sends joins its trace.
        sa.Column("traceparent", sa.Text, nullable=True),
        # When the awaited reply is overdue (NULL: nothing awaited); read by the stuck-saga sweep.
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    # Unfinished sagas, for the stuck-saga sweep and the invariants checker.
    sa.Index(f"{instances.name}_deadlines", instances.c.deadline, postgresql_where=~instances.c.finished)
    history = sa.Table(
        "saga_history",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("saga_type", sa.Text, nullable=False),
        sa.Column("saga_id", sa.Text, nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.clock_timestamp()),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("detail", JSONB, nullable=False),
    )
    return instances, history


def upgrade_saga_tables(conn: sa.Connection, instances: sa.Table, history: sa.Table) -> None:
    """Columns added since a table was first created (create_all adds only missing tables)."""
    table = f'"{instances.schema}"."{instances.name}"'
    for column in ("deadline timestamptz", "attempt integer NOT NULL DEFAULT 0", "parked_reason text",
                   "definition_version integer NOT NULL DEFAULT 1", "step_name text", "traceparent text"):
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"))
    key_by_saga_type(conn, instances)
    entries = f'"{history.schema}"."{history.name}"'
    if "saga_type" not in {c["name"] for c in sa.inspect(conn).get_columns(history.name, schema=history.schema)}:
        # Entries from before there were two saga types over one id: each is its instance's. The default
        # stays for the rollout: an old replica still writes entries without the column, and then ran only
        # the CreateOrderSaga (drop it in the release after: docs/deploy.md).
        conn.execute(sa.text(f"ALTER TABLE {entries} ADD COLUMN saga_type text"))
        conn.execute(sa.text(f"UPDATE {entries} h SET saga_type = i.saga_type FROM {table} i "
                             "WHERE h.saga_id = i.saga_id"))
        conn.execute(sa.text(f"UPDATE {entries} SET saga_type = '?' WHERE saga_type IS NULL"))
        conn.execute(sa.text(f"ALTER TABLE {entries} ALTER COLUMN saga_type SET DEFAULT {_LEGACY_TYPE}"))
        conn.execute(sa.text(f"ALTER TABLE {entries} ALTER COLUMN saga_type SET NOT NULL"))


_LEGACY_TYPE = "'CreateOrderSaga'"  # the only saga type before there were two


def key_by_saga_type(conn: sa.Connection, table: sa.Table, *, legacy_type: str | None = None) -> None:
    """Make (saga_type, saga_id) the table's primary key where it was saga_id alone (tables from before
    two saga types could share an id). `legacy_type`: the type of the existing rows, when the table had
    no saga_type column (a participant's reservations: all the CreateOrderSaga's then)."""
    name = f'"{table.schema}"."{table.name}"'
    inspector = sa.inspect(conn)
    if legacy_type is not None and "saga_type" not in {c["name"] for c in inspector.get_columns(table.name,
                                                                                               schema=table.schema)}:
        literal = "'" + legacy_type.replace("'", "''") + "'"  # DDL takes no parameters
        # The default stays for the rollout: an old replica still inserts rows without the column (and
        # then served only `legacy_type`); drop it in the release after (docs/deploy.md).
        conn.execute(sa.text(f"ALTER TABLE {name} ADD COLUMN saga_type text NOT NULL DEFAULT {literal}"))
    key = inspector.get_pk_constraint(table.name, schema=table.schema)
    if key["constrained_columns"] == ["saga_id"]:
        conn.execute(sa.text(f'ALTER TABLE {name} DROP CONSTRAINT "{key["name"]}"'))
        conn.execute(sa.text(f"ALTER TABLE {name} ADD PRIMARY KEY (saga_type, saga_id)"))

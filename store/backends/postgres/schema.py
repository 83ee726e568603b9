"""The PostgreSQL schema of the log, as numbered migrations, and the code that applies them.

:func:`migrate` applies the missing ones when a store opens, under an advisory lock, in the
connection's ``search_path``. The tables mirror SQLite's (``store/backends/sqlite/recorder.py``).
Version 1 ordered the log by ``(tx_id, position)``; version 2 renumbers positions in that
order, so that they increase in log order, moves the positions stored by subscriptions and
projections to the new numbers, and drops ``tx_id`` (transaction ids do not survive a
restore into another server).
"""

from __future__ import annotations

from typing import Any, LiteralString

import psycopg

from chatledger.store.errors import BackendUnavailable

__all__ = ["HEAD_COLUMNS", "MIGRATIONS", "RECORD_COLUMNS", "SCHEMA_VERSION", "migrate"]

RECORD_COLUMNS: LiteralString = (
    "position, stream_id, version, conversation_id, tenant, event_id, type, schema_version, key, "
    "recorded_at, payload, hash"
)
HEAD_COLUMNS: LiteralString = (
    "stream_id, conversation_id, tenant, kind, version, head_hash, created_at, updated_at, status, "
    "lease_until, metadata, substreams"
)

# Version 1's log order as numbers: old position -> rank in (tx_id, position) order. A consumer
# that stored old position p continued after the row with the greatest old position <= p.
_RENUMBER = """
LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;
CREATE TEMP TABLE chatledger_renumber ON COMMIT DROP AS
    SELECT position AS old, row_number() OVER (ORDER BY tx_id, position) AS new FROM events;
CREATE UNIQUE INDEX ON chatledger_renumber (old);
UPDATE events SET position = -r.new FROM chatledger_renumber r WHERE events.position = r.old;
UPDATE events SET position = -position WHERE position < 0;
CREATE FUNCTION pg_temp.chatledger_moved(p bigint) RETURNS bigint LANGUAGE sql STABLE AS
    'SELECT COALESCE((SELECT new FROM chatledger_renumber WHERE old <= p ORDER BY old DESC LIMIT 1), 0)';
DO $$
BEGIN
    IF to_regclass('subscriptions') IS NOT NULL THEN
        UPDATE subscriptions SET position = pg_temp.chatledger_moved(position),
            failed_position = pg_temp.chatledger_moved(failed_position);
    END IF;
    IF to_regclass('projection_tracking') IS NOT NULL THEN
        UPDATE projection_tracking SET position = pg_temp.chatledger_moved(position);
    END IF;
END $$;
DROP FUNCTION pg_temp.chatledger_moved(bigint);
DROP INDEX IF EXISTS events_log_order;
DROP INDEX IF EXISTS events_tenant_log_order;
ALTER TABLE events DROP COLUMN IF EXISTS tx_id;
CREATE INDEX IF NOT EXISTS events_tenant_position ON events (tenant, position);
SELECT setval(pg_get_serial_sequence('events', 'position'), COALESCE(max(position), 0) + 1, false) FROM events;
"""

# Each migration brings the schema from the previous version to its own; they only ever grow.
MIGRATIONS: tuple[tuple[int, LiteralString], ...] = (
    (
        1,
        """
CREATE TABLE IF NOT EXISTS events (
    position bigserial PRIMARY KEY,
    tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    stream_id text NOT NULL,
    version bigint NOT NULL,
    conversation_id text NOT NULL,
    tenant text NOT NULL,
    event_id text NOT NULL UNIQUE,
    type text NOT NULL,
    schema_version integer NOT NULL,
    key text,
    recorded_at text NOT NULL,
    payload text NOT NULL,
    hash text NOT NULL,
    UNIQUE (stream_id, version)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_stream_key ON events (stream_id, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_log_order ON events (tx_id, position);
CREATE INDEX IF NOT EXISTS events_tenant_log_order ON events (tenant, tx_id, position);
CREATE TABLE IF NOT EXISTS streams (
    stream_id text PRIMARY KEY,
    conversation_id text NOT NULL,
    tenant text NOT NULL,
    kind text NOT NULL,
    version bigint NOT NULL,
    head_hash text NOT NULL,
    created_at text NOT NULL,
    updated_at text NOT NULL,
    status text,
    lease_until double precision,
    metadata text
);
CREATE INDEX IF NOT EXISTS streams_by_kind ON streams (kind, tenant, created_at);
CREATE INDEX IF NOT EXISTS streams_by_conversation ON streams (conversation_id, kind);
CREATE INDEX IF NOT EXISTS streams_by_status ON streams (kind, status, lease_until) WHERE status IS NOT NULL;
""",
    ),
    (2, _RENUMBER),
    # A conversation's record of its tool-call and side streams (NULL: conversations started before it).
    (3, "ALTER TABLE streams ADD COLUMN IF NOT EXISTS substreams text"),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Rows restored without their sequence (a data-only restore, a copy by hand) would make new
# positions collide with old ones: the sequence is moved past the highest position first.
_SEQUENCE_BEHIND = (
    "SELECT max(position) > COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'position')), 0) "
    "FROM events"
)
_CATCH_UP = (
    "SELECT setval(pg_get_serial_sequence('events', 'position'), max(position)) FROM events "
    "HAVING max(position) > COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'position')), 0)"
)


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Create or upgrade the schema once, however many processes start at the same moment.

    Also moves the position sequence past the highest stored position if it is behind.
    """
    row = conn.execute("SELECT to_regclass('chatledger_schema') IS NOT NULL, current_schema()").fetchone()
    assert row is not None
    if row[1] is None:
        raise BackendUnavailable("the search_path names no existing schema to create tables in")
    if row[0]:
        current = conn.execute("SELECT COALESCE(max(version), 0) FROM chatledger_schema").fetchone()
        if current is not None and current[0] >= SCHEMA_VERSION:
            behind = conn.execute(_SEQUENCE_BEHIND).fetchone()
            if not (behind and behind[0]):
                return
    with conn.transaction():
        # Per-schema lock: concurrent starters wait here instead of racing on the catalog.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('chatledger:' || current_schema(), 0))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS chatledger_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = conn.execute("SELECT COALESCE(max(version), 0) FROM chatledger_schema").fetchone()
        have = int(done[0]) if done else 0
        for version, sql in MIGRATIONS:
            if version > have:
                conn.execute(sql)
                conn.execute("INSERT INTO chatledger_schema (version) VALUES (%s)", (version,))
        conn.execute(_CATCH_UP)

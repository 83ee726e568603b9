"""The PostgreSQL schema of the log, as numbered migrations.

:class:`chatledger.store.backends.postgres.recorder.PostgresRecorder` applies the missing ones on
first use, under an advisory lock, in the connection's ``search_path``. The
tables mirror SQLite's (``store/backends/sqlite/recorder.py``) plus ``tx_id``, the inserting
transaction's id, which orders the global log without a global lock.
"""

from __future__ import annotations

from typing import LiteralString

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

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
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

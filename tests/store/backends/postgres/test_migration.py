"""Opening a database made by an earlier schema: the migration keeps the log order and the consumers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from chatledger.store import Event, open_store
from chatledger.store.backends.postgres.schema import MIGRATIONS

from ....conftest import postgres_base_url, with_search_path


@pytest.fixture
def two_schemas() -> Iterator[tuple[str, str]]:
    """URLs of two fresh schemas: one for a current store, one to build a version-1 database in."""
    base = postgres_base_url()
    names = [f"cl_test_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(base, autocommit=True) as conn:
        for name in names:
            conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield with_search_path(base, names[0]), with_search_path(base, names[1])
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_version_1_log_opens_in_its_order_and_its_consumers_resume(two_schemas: tuple[str, str]) -> None:
    """A version-1 log (ordered by transaction id, positions out of that order) opens with positions
    renumbered in its order; a subscription continues after the event it had reached and a
    projection's stored position names the same event."""
    current, legacy = two_schemas
    source = open_store(current)
    convs = [source.start_conversation(f"c{n}") for n in range(2)]
    for i in range(3):
        for conv in convs:
            source.append(conv, [{"role": "user", "content": f"{conv}-{i}"}])
    source.subscribe("follower", lambda e: None).run_once()
    order = source.read_all()
    source.close()
    # Version 1 ordered by (tx_id, position): give each event a transaction id in log order and a
    # position that disagrees with it (pairs swapped), as interleaved transactions left them.
    old_positions = [p + 100 for n in range(0, len(order), 2) for p in (n + 2, n + 1)][: len(order)]
    schema = current.rsplit("%3D", 1)[1]
    with psycopg.connect(legacy, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE chatledger_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(MIGRATIONS[0][1])
        conn.execute("INSERT INTO chatledger_schema (version) VALUES (1)")
        conn.execute(
            "INSERT INTO streams SELECT stream_id, conversation_id, tenant, kind, version, head_hash, created_at, "
            f'updated_at, status, lease_until, metadata FROM "{schema}".streams'
        )
        for rank, (event, old) in enumerate(zip(order, old_positions, strict=True)):
            conn.execute(
                "INSERT INTO events (position, tx_id, stream_id, version, conversation_id, tenant, event_id, type, "
                "schema_version, key, recorded_at, payload, hash) SELECT %s, %s::text::xid8, stream_id, version, "
                "conversation_id, tenant, event_id, type, schema_version, key, recorded_at, payload, hash "
                f'FROM "{schema}".events WHERE event_id = %s',
                (old, 5000 + rank, event.event_id),
            )
        conn.execute(f'CREATE TABLE subscriptions (LIKE "{schema}".subscriptions INCLUDING ALL)')
        conn.execute(f'INSERT INTO subscriptions SELECT * FROM "{schema}".subscriptions')
        # The follower had reached the fourth event in log order; a projection the sixth.
        conn.execute("UPDATE subscriptions SET position = %s", (old_positions[3],))
        conn.execute(
            "CREATE TABLE projection_tracking (name text PRIMARY KEY, version integer NOT NULL, "
            "position bigint NOT NULL, events bigint NOT NULL, updated_at text NOT NULL)"
        )
        conn.execute("INSERT INTO projection_tracking VALUES ('index', 1, %s, 6, 'then')", (old_positions[5],))

    store = open_store(legacy)
    log = store.read_all()
    assert [e.event_id for e in log] == [e.event_id for e in order]
    assert [e.position for e in log] == list(range(1, len(order) + 1))
    delivered: list[Event] = []
    assert store.subscribe("follower", delivered.append).run_once() == len(order) - 4
    assert [e.event_id for e in delivered] == [e.event_id for e in order[4:]]
    with psycopg.connect(legacy) as conn:
        assert conn.execute("SELECT position FROM projection_tracking").fetchone() == (6,)
    (appended,) = store.append(convs[0], [{"role": "user", "content": "after the upgrade"}])
    assert appended.position == len(order) + 1
    store.close()

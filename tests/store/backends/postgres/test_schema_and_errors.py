"""PostgreSQL schema creation, the search_path, read-model connections and the error translation."""

from __future__ import annotations

import multiprocessing as mp
import uuid

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout

from chatledger.store import BackendUnavailable, ConflictError, ValidationError, open_store
from chatledger.store.backends.postgres.recorder import SCHEMA_VERSION, PostgresRecorder, split_url, translate
from chatledger.store.backends.recorder import NewRecord

from ....conftest import with_search_path


def _open(url: str, barrier: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    PostgresRecorder(url).close()


def test_many_processes_starting_at_once_create_the_schema_once(postgres_url: str) -> None:
    """Six processes opening an empty schema together all succeed and record each migration once."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_open, args=(postgres_url, barrier)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 6
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute("SELECT version FROM chatledger_schema ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_tables_live_in_the_search_path_schema(postgres_url: str) -> None:
    """The tables are created in the URL's search_path schema, never in public."""
    PostgresRecorder(postgres_url).close()
    schema = postgres_url.rsplit("%3D", 1)[1]
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_name IN "
            "('events', 'streams', 'chatledger_schema') ORDER BY table_name"
        ).fetchall()
        kinds = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'events'",
                (schema,),
            ).fetchall()
        )
    assert {(schema, "chatledger_schema"), (schema, "events"), (schema, "streams")} <= set(tables)
    assert kinds["payload"] == "text" and "tx_id" not in kinds


def test_search_path_without_a_schema_is_backend_unavailable() -> None:
    """A search_path naming no existing schema raises BackendUnavailable, not a psycopg error."""
    from ....conftest import postgres_base_url

    url = with_search_path(postgres_base_url(), f"missing_{uuid.uuid4().hex[:8]}")
    with pytest.raises(BackendUnavailable, match="search_path"):
        PostgresRecorder(url)


def test_unreachable_server_is_backend_unavailable() -> None:
    """Nothing listening at the URL's port gives BackendUnavailable within the timeout."""
    with pytest.raises(BackendUnavailable):
        open_store("postgresql://postgres@127.0.0.1:1/none", timeout=1)


def test_connection_commits_together_and_translates_errors(postgres_url: str) -> None:
    """connection() commits a read model's table and position together, rolls back on error, and
    raises chatledger errors for psycopg ones."""
    rec = PostgresRecorder(postgres_url)
    try:
        with rec.connection() as conn:
            conn.execute("CREATE TABLE model (k text PRIMARY KEY, position bigint)")
            conn.execute("INSERT INTO model VALUES ('a', 1)")
        with pytest.raises(ConflictError), rec.connection() as conn:
            conn.execute("UPDATE model SET position = 2")
            conn.execute("INSERT INTO model VALUES ('a', 3)")
        with pytest.raises(BackendUnavailable), rec.connection() as conn:
            conn.execute("SELECT * FROM no_such_table")
        with rec.connection() as conn:
            assert conn.execute("SELECT k, position FROM model").fetchall() == [("a", 1)]
    finally:
        rec.close()


def test_duplicate_event_id_and_nul_payload_are_typed_errors(postgres_url: str) -> None:
    """A reused event id is a ConflictError and a NUL in a payload a ValidationError; nothing is stored."""
    store = open_store(postgres_url)
    try:
        conv = store.start_conversation()
        first = store.read_all()[0]
        head = store.recorder.get_head(conv)
        assert head is not None

        def record(event_id: str, payload: str) -> NewRecord:
            return NewRecord(conv, 2, conv, "default", event_id, "MessageAppended", 1, None, "t", payload, "h", 0)

        with pytest.raises(ConflictError), store.recorder.write() as tx:
            tx.head(conv)
            tx.insert([record(first.event_id, "{}")])
        with pytest.raises(ValidationError), store.recorder.write() as tx:
            tx.head(conv)
            tx.insert([record(uuid.uuid4().hex, "nul \x00 here")])
        assert len(store.read_all()) == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pgerrors.UniqueViolation("dup"), ConflictError),
        (pgerrors.ForeignKeyViolation("fk"), ConflictError),
        (psycopg.DataError("nul"), ValidationError),
        (pgerrors.DeadlockDetected("deadlock"), ConflictError),
        (pgerrors.LockNotAvailable("lock timeout"), BackendUnavailable),
        (pgerrors.AdminShutdown("terminated"), BackendUnavailable),
        (psycopg.OperationalError("connection refused"), BackendUnavailable),
        (psycopg.InterfaceError("closed"), BackendUnavailable),
        (pgerrors.UndefinedTable("missing"), BackendUnavailable),
        (PoolTimeout("no connection"), BackendUnavailable),
    ],
)
def test_psycopg_errors_translate_at_the_boundary(error: Exception, expected: type[Exception]) -> None:
    """Every psycopg and pool error becomes the pinned chatledger error."""
    assert type(translate(error, "doing it")) is expected


def test_url_options_are_split_from_libpq_ones() -> None:
    """chatledger's own URL options are taken out; libpq's (options=, sslmode=) pass through."""
    conninfo, ours = split_url("postgres://u@h/db?pool_max=4&options=-csearch_path%3Dx&read_wait=1")
    assert conninfo == "postgresql://u@h/db?options=-csearch_path%3Dx"
    assert ours == {"pool_max": "4", "read_wait": "1"}

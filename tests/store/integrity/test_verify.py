"""verify() recomputes every stream's chain and names the first tampered event of each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatledger.store import IntegrityError, NotFoundError, Store, open_store
from chatledger.store.backends.recorder import Record
from chatledger.store.integrity.chain import GENESIS, event_hash
from chatledger.store.integrity.verify import UNKNOWN_CONVERSATION, ChainProblem, heads, verify

from .scenario import SIDE, TAMPERS, Found, Tamper, build, sqlite_rows, tamper_postgres, tamper_sqlite, unguarded


def _expect(report_problems: list[ChainProblem], found: Found) -> None:
    assert len(report_problems) == 1, [p.describe() for p in report_problems]
    problem = report_problems[0]
    assert (problem.stream_id, problem.kind, problem.version) == (
        found.stream_id,
        found.kind,
        found.version,
    ), problem.describe()
    # A missing stream number (#n) or an empty position of the log (no stream) cannot name its conversation.
    unknown = found.stream_id.startswith("#") or not found.stream_id
    assert problem.conversation_id == (UNKNOWN_CONVERSATION if unknown else "c1")


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_sqlite_tampering_is_named(tmp_path: Path, tamper: Tamper) -> None:
    """Each edit made to the SQLite file, its triggers dropped, is named by stream, version and kind.

    verify alone names what the file shows and reports nothing where the file looks
    whole (a stream moved to another tenant); with the heads kept before the edit, every
    one is named.
    """
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        kept = heads(store)
        assert verify(store, kept=kept).ok
        tamper_sqlite(path, tamper.sqlite)
        alone = verify(store)
        if tamper.in_file is None:
            assert alone.problems == []
        else:
            _expect(alone.problems, tamper.in_file)
        report = verify(store, kept=kept)
        assert not report.ok
        # A missing stream number was named above; against kept heads the conversation is named.
        _expect([p for p in report.problems if p.conversation_id != UNKNOWN_CONVERSATION], tamper.with_kept)
        with pytest.raises(IntegrityError, match="c1"):
            report.raise_if_broken()


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_postgres_tampering_is_named(postgres_url: str, tamper: Tamper) -> None:
    """Each edit made directly to the PostgreSQL tables is reported on its stream, at its version, by kind.

    The head rows show every one of them; kept heads add nothing for a stream already broken.
    """
    pytest.importorskip("chatledger.store.backends.postgres.recorder")
    with open_store(postgres_url) as store:
        build(store)
        kept = heads(store)
        assert verify(store).ok
        tamper_postgres(postgres_url, tamper.postgres)
        _expect(store.verify().problems, tamper.found)
        _expect(verify(store, kept=kept).problems, tamper.found)


def test_sqlite_file_refuses_updates_and_deletes_of_the_log(tmp_path: Path) -> None:
    """An UPDATE or DELETE of an event, or a DELETE of a stream, run on the file fails and changes nothing."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        kept = heads(store)
        before = sqlite_rows(path), sqlite_rows(path, "streams")
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            for sql in (
                "UPDATE events SET payload = '{}' WHERE version = 3",
                "UPDATE events SET version = version + 1",
                "DELETE FROM events WHERE version = 5",
                "DELETE FROM events",
                "DELETE FROM streams WHERE stream_id = 'c1'",
            ):
                with pytest.raises(sqlite3.IntegrityError, match=r"append-only|never deleted"):
                    conn.execute(sql)
        finally:
            conn.close()
        assert (sqlite_rows(path), sqlite_rows(path, "streams")) == before
        assert verify(store, kept=kept).ok


def test_a_conversation_moved_to_another_tenant_breaks_its_chain_there(tmp_path: Path) -> None:
    """The chain covers the tenant: a SQLite stream moved to another tenant does not verify for that tenant,
    and the side stream it left behind is missing from the record its head keeps of its streams."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        build(store)
    tamper_sqlite(str(tmp_path / "chat.db"), ["UPDATE streams SET tenant = 'mallory' WHERE stream_id = 'c1'"])
    with open_store(url, tenant="mallory") as mallory:
        problems = [(p.stream_id, p.kind, p.version) for p in mallory.verify().problems]
        assert problems == [("c1", "changed", 1), ("c1", "removed", 5)]


def test_a_rolled_back_and_rewritten_sqlite_conversation_shows_only_against_kept_heads(tmp_path: Path) -> None:
    """Deleting the log's last event and appending another leaves a chain and positions that hold; the kept
    head names version 2. The same rollback of a conversation with later events in the log leaves its
    position empty, and verify alone names it."""
    path = str(tmp_path / "chat.db")
    url = f"sqlite:///{path}"
    with open_store(url) as store:
        build(store)
        kept = heads(store)
    tamper_sqlite(
        path, ["DELETE FROM events WHERE sid = (SELECT sid FROM streams WHERE stream_id = 'c2') AND version = 2"]
    )
    with open_store(url) as store:
        store.append("c2", [{"role": "user", "content": "something else"}])
        assert store.verify().ok
        report = verify(store, kept=kept)
        assert [(p.stream_id, p.kind, p.version) for p in report.problems] == [("c2", "changed", 2)]
        assert report.problems[0].position == store.recorder.read_stream("c2")[-1].position
        c1_last = store.recorder.read_stream("c1")[-1].position
    tamper_sqlite(
        path, ["DELETE FROM events WHERE sid = (SELECT sid FROM streams WHERE stream_id = 'c1') AND version = 5"]
    )
    with open_store(url) as store:
        store.append("c1", [{"role": "user", "content": "rewritten"}])
        problems = store.verify().problems
        assert [(p.stream_id, p.kind, p.position) for p in problems] == [("", "removed", c1_last)]


def test_intact_log_verifies_on_every_backend(store_url: str, backend: str) -> None:
    """An untampered log verifies, alone and against its heads: every stream and event is counted."""
    with open_store(store_url) as store:
        build(store)
        report = store.verify()
        assert report.ok and report.problems == [] and report.legacy == 0
        assert (report.streams, report.events, report.kept) == (3, 9, 0)
        one = store.verify("c1")
        assert (one.streams, one.events) == (2, 7)
        kept = heads(store)
        assert {h[0]: h[2] for h in kept} == {"c1": 5, SIDE: 2, "c2": 2}
        store.append("c2", [{"role": "user", "content": "the log grows"}])
        against = verify(store, kept=kept)
        assert against.ok and (against.streams, against.events, against.kept) == (3, 10, 3)
        assert verify(store, "c1", kept=kept).kept == 2


def test_kept_heads_name_gone_shorter_and_changed_conversations_on_every_backend(store_url: str, backend: str) -> None:
    """A kept conversation that is not stored is removed; one shorter than kept is removed; another hash is changed."""
    with open_store(store_url) as store:
        build(store)
        held = {h[0]: h for h in heads(store)}
        (c1, c1_hash, _), (c2, _, c2_version) = held["c1"], held["c2"]
        kept = [(c1, c1_hash, 9), (c2, "ab" * 32, c2_version), ("c9", "cd" * 32, 3)]
        report = verify(store, kept=kept)
        found = [(p.stream_id, p.kind, p.version, p.position is None) for p in report.problems]
        assert found == [("c1", "removed", 6, True), ("c2", "changed", 2, False), ("c9", "removed", 1, True)]
        assert "kept head is version 9, 5 events are stored" in report.problems[0].describe()
        assert report.problems[1].position == store.recorder.read_stream("c2")[-1].position
        assert [(p.stream_id, p.kind) for p in verify(store, "c9", kept=kept).problems] == [("c9", "removed")]
        assert verify(store, "c1", kept=[("c9", "cd" * 32, 3)]).ok
        with pytest.raises(NotFoundError):
            verify(store, "c9", kept=[])


def test_verify_one_conversation_only_reports_its_streams(tmp_path: Path) -> None:
    """verify(store, id) checks that conversation's streams and ignores damage elsewhere."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        tamper_sqlite(
            path, ["DELETE FROM events WHERE sid = (SELECT sid FROM streams WHERE stream_id = 'c2') AND version = 1"]
        )
        assert store.verify("c1").ok
        assert [p.stream_id for p in store.verify("c2").problems] == ["c2"]
        with pytest.raises(NotFoundError):
            store.verify("nope")


def _rehash(rec: Record, prev: str, key: bytes | None, metadata: str | None = None, position: int | None = None) -> str:
    """The hash of ``rec``'s stored fields after ``prev`` (by rule 3 when ``position`` is given, else 2 or 1)."""
    return event_hash(
        prev,
        stream_id=rec.stream_id,
        version=rec.version,
        event_id=rec.event_id,
        type_name=rec.type,
        schema_version=rec.schema_version,
        key=rec.key,
        recorded_at=rec.recorded_at,
        tenant=rec.tenant,
        payload=rec.payload,
        signing_key=key,
        metadata=metadata,
        position=position,
    )


def _forge(path: str, store: Store, key: bytes | None) -> None:
    """Change c1's second message in the SQLite file and recompute its whole chain with ``key``.

    The text forms the chain covers are read through the recorder; hashes are written
    back in the file's stored form (32 bytes).
    """
    prev = GENESIS
    conn = unguarded(path)
    try:
        for rec in store.recorder.read_stream("c1"):
            payload = rec.payload.replace("hello 2", "forged!")
            prev = _rehash(rec._replace(payload=payload), prev, key)
            conn.execute(
                "UPDATE events SET payload = ?, hash = ? WHERE position = ?",
                (payload, bytes.fromhex(prev), rec.position),
            )
    finally:
        conn.close()


def test_unsigned_chain_can_be_recomputed_by_an_attacker(tmp_path: Path) -> None:
    """Without a signing key a rewritten, re-hashed conversation verifies: only kept heads reveal it."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        kept = heads(store)
        _forge(path, store, None)
        assert store.messages("c1")[1]["content"] == "forged!"
        assert store.verify().ok
        assert heads(store) != kept
        report = verify(store, kept=kept)
        assert [(p.stream_id, p.kind, p.version) for p in report.problems] == [("c1", "changed", 5)]


def test_signed_chain_recomputed_without_the_key_fails(tmp_path: Path) -> None:
    """With a signing key, a chain forged without the key (plain SHA-256) fails verification."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}", signing_key=b"s3cret") as store:
        build(store)
        assert store.verify().ok and store.verify().signed
        _forge(path, store, None)
        report = store.verify()
        assert [(p.stream_id, p.kind, p.version) for p in report.problems] == [("c1", "changed", 1)]
        assert "signing key" in report.problems[0].detail


def test_signed_chain_recomputed_with_a_wrong_key_fails(tmp_path: Path) -> None:
    """A chain forged under a guessed key fails at its first event."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}", signing_key=b"s3cret") as store:
        build(store)
        _forge(path, store, b"guess")
        assert [(p.stream_id, p.version) for p in store.verify().problems] == [("c1", 1)]


def test_signing_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """open_store reads CHATLEDGER_SIGNING_KEY; a store opened without it finds the signed chains broken."""
    monkeypatch.setenv("CHATLEDGER_SIGNING_KEY", "from-env")
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    with open_store(url) as store:
        assert store.signing_key == b"from-env"
        build(store)
        assert store.verify().ok
    monkeypatch.delenv("CHATLEDGER_SIGNING_KEY")
    with open_store(url) as store:
        assert store.signing_key is None
        assert {p.stream_id for p in store.verify().problems} == {"c1", "c2", SIDE}


def test_every_event_covers_its_global_position_on_every_backend(store_url: str, backend: str) -> None:
    """Signed events hash their global position (chain rule 3) on every path: transactions, lone appends of
    one event (PostgreSQL finishes that hash in SQL) and of several; the same event at another position
    does not verify."""
    key = b"s3cret"
    with open_store(store_url, signing_key=key) as store:
        build(store)
        store.append("c2", [{"role": "user", "content": "one"}])
        store.append("c2", [{"role": "user", "content": "two"}])
        store.append("c2", [{"role": "user", "content": "three"}, {"role": "user", "content": "four"}])
        report = store.verify()
        assert report.ok and report.unpositioned == 0 and report.events == 13
        for rec in store.recorder.read_all():
            metadata = None
            if rec.version == 1 and rec.stream_id == rec.conversation_id:
                head = store.recorder.get_head(rec.stream_id)
                metadata = (head.metadata if head else None) or ""

            prev = GENESIS if rec.version == 1 else store.recorder.read_stream(rec.stream_id)[rec.version - 2].hash
            assert _rehash(rec, prev, key, metadata, rec.position) == rec.hash, rec
            assert _rehash(rec, prev, key, metadata, rec.position + 1) != rec.hash

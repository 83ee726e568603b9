"""verify() recomputes every stream's chain and names the first tampered event of each."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from chatledger.store import IntegrityError, NotFoundError, open_store
from chatledger.store.chain import GENESIS, event_hash
from chatledger.store.verify import heads, verify

from .scenario import SIDE, TAMPERS, Tamper, build, tamper_postgres, tamper_sqlite


def _expect(report_problems: list, tamper: Tamper) -> None:
    assert len(report_problems) == 1, [p.describe() for p in report_problems]
    problem = report_problems[0]
    assert (problem.stream_id, problem.kind, problem.version) == (
        tamper.stream_id,
        tamper.kind,
        tamper.version,
    ), problem.describe()
    assert problem.conversation_id == "c1"


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_sqlite_tampering_is_named(tmp_path: Path, tamper: Tamper) -> None:
    """Each edit made directly to the SQLite file is reported on its stream, at its version, by kind."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        assert verify(store).ok
        tamper_sqlite(path, tamper.statements)
        report = verify(store)
        assert not report.ok
        _expect(report.problems, tamper)
        with pytest.raises(IntegrityError, match="c1"):
            report.raise_if_broken()


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_postgres_tampering_is_named(postgres_url: str, tamper: Tamper) -> None:
    """Each edit made directly to the PostgreSQL tables is reported on its stream, at its version, by kind."""
    pytest.importorskip("chatledger.store.postgres")
    with open_store(postgres_url) as store:
        build(store)
        assert verify(store).ok
        tamper_postgres(postgres_url, tamper.statements)
        report = store.verify()
        _expect(report.problems, tamper)


def test_intact_log_verifies_on_every_backend(store_url: str, backend: str) -> None:
    """An untampered log verifies: every stream and event is counted, no problem is found."""
    with open_store(store_url) as store:
        build(store)
        report = store.verify()
        assert report.ok and report.problems == []
        assert (report.streams, report.events) == (3, 9)
        one = store.verify("c1")
        assert (one.streams, one.events) == (2, 7)
        assert {h[0]: h[2] for h in heads(store)} == {"c1": 5, "c2": 2}


def test_verify_one_conversation_only_reports_its_streams(tmp_path: Path) -> None:
    """verify(store, id) checks that conversation's streams and ignores damage elsewhere."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        tamper_sqlite(path, ["DELETE FROM events WHERE stream_id = 'c2' AND version = 2"])
        assert store.verify("c1").ok
        assert [p.stream_id for p in store.verify("c2").problems] == ["c2"]
        with pytest.raises(NotFoundError):
            store.verify("nope")


def _forge(path: str, key: bytes | None) -> None:
    """Change c1's second message and recompute its whole chain and head, with ``key``."""
    conn = sqlite3.connect(path, isolation_level=None)
    cols = "position, stream_id, version, event_id, type, schema_version, key, recorded_at, tenant, payload"
    rows = conn.execute(f"SELECT {cols} FROM events WHERE stream_id = 'c1' ORDER BY version").fetchall()
    prev = GENESIS
    for pos, stream, version, event_id, type_name, schema, k, at, tenant, payload in rows:
        payload = payload.replace("hello 2", "forged!")
        prev = event_hash(
            prev,
            stream_id=stream,
            version=version,
            event_id=event_id,
            type_name=type_name,
            schema_version=schema,
            key=k,
            recorded_at=at,
            tenant=tenant,
            payload=payload,
            signing_key=key,
        )
        conn.execute("UPDATE events SET payload = ?, hash = ? WHERE position = ?", (payload, prev, pos))
    conn.execute("UPDATE streams SET head_hash = ? WHERE stream_id = 'c1'", (prev,))
    conn.close()


def test_unsigned_chain_can_be_recomputed_by_an_attacker(tmp_path: Path) -> None:
    """Without a signing key a rewritten, re-hashed conversation verifies: only kept heads reveal it."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}") as store:
        build(store)
        kept = heads(store)
        _forge(path, None)
        assert store.messages("c1")[1]["content"] == "forged!"
        assert store.verify().ok
        assert heads(store) != kept


def test_signed_chain_recomputed_without_the_key_fails(tmp_path: Path) -> None:
    """With a signing key, a chain forged without the key (plain SHA-256) fails verification."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}", signing_key=b"s3cret") as store:
        build(store)
        assert store.verify().ok and store.verify().signed
        _forge(path, None)
        report = store.verify()
        assert [(p.stream_id, p.kind, p.version) for p in report.problems] == [("c1", "changed", 1)]
        assert "signing key" in report.problems[0].detail


def test_signed_chain_recomputed_with_a_wrong_key_fails(tmp_path: Path) -> None:
    """A chain forged under a guessed key fails at its first event."""
    path = str(tmp_path / "chat.db")
    with open_store(f"sqlite:///{path}", signing_key=b"s3cret") as store:
        build(store)
        _forge(path, b"guess")
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

"""Encryption at rest: payloads are AES-GCM ciphertext in the database; erasure destroys the key."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from chatledger.store import IntegrityError, NotFoundError, Store, ValidationError, open_store
from chatledger.store.errors import ErasedError
from chatledger.store.integrity.crypto import EncryptingCodec, erase, erase_tenant, generate_master_key, is_erased

from .scenario import unguarded

MakeStore = Callable[..., Store]
KEY = os.urandom(32)


def _encrypted(make_store: MakeStore, tenant: str = "default", key: bytes = KEY) -> Store:
    """An encrypting store; on memory its codec uses the backend all stores of the test share."""
    if backend_of(make_store) != "memory":
        return make_store(tenant=tenant, encryption=key)
    backend = make_store(tenant=tenant).backend
    return make_store(tenant=tenant, codec=EncryptingCodec(key, backend.key_store()))


def backend_of(make_store: MakeStore) -> str:
    """The backend a make_store fixture opens (memory stores have no URL)."""
    from chatledger.store.backends.memory.recorder import MemoryRecorder

    return "memory" if isinstance(make_store(tenant="probe").recorder, MemoryRecorder) else "db"


def test_payloads_are_ciphertext_and_read_back_exactly(make_store: MakeStore) -> None:
    """Stored payloads are ciphertext (no plaintext in them); reads return the messages exactly."""
    store = _encrypted(make_store)
    msgs = [{"role": "user", "content": "my PIN is 1234 ✓"}, {"role": "assistant", "content": "noted"}]
    store.start_conversation("c1", metadata={"user": "alice"}, messages=msgs)
    assert store.messages("c1") == msgs
    assert store.events("c1")[0].metadata == {"user": "alice"}  # type: ignore[attr-defined]
    raw = store.recorder.read_all()
    assert len(raw) == 3
    for record in raw:
        assert record.payload.startswith("enc:v1:")
        assert "1234" not in record.payload and "alice" not in record.payload
        assert record.conversation_id == "c1"
    assert [r.type for r in raw] == ["conversation.started", "message.appended", "message.appended"]
    assert store.verify().ok


def test_erasure_makes_a_conversation_unreadable_but_verifiable(make_store: MakeStore) -> None:
    """After erase, reads and appends raise ErasedError, the events stay, verify passes, others are intact."""
    store = _encrypted(make_store)
    store.start_conversation("gone", messages=[{"role": "user", "content": "forget me"}])
    store.start_conversation("kept", messages=[{"role": "user", "content": "keep me"}])
    before = store.recorder.read_all()
    assert is_erased(store, "gone") is False
    assert erase(store, "gone") is True
    with pytest.raises(ErasedError):
        store.messages("gone")
    with pytest.raises(ErasedError):
        store.events("gone")
    with pytest.raises(ErasedError):
        store.append("gone", [{"role": "user", "content": "again"}])
    assert store.recorder.read_all() == before
    assert store.verify().ok
    assert store.messages("kept") == [{"role": "user", "content": "keep me"}]
    assert is_erased(store, "gone") is True
    assert erase(store, "gone") is False
    with pytest.raises(ErasedError):
        _encrypted(make_store).messages("gone")


def test_erasure_is_tenant_scoped(make_store: MakeStore) -> None:
    """A tenant cannot erase another tenant's conversation; erase_tenant erases only its own."""
    a, b = _encrypted(make_store, "a"), _encrypted(make_store, "b")
    a.start_conversation("ac", messages=[{"role": "user", "content": "a"}])
    b.start_conversation("bc", messages=[{"role": "user", "content": "b"}])
    with pytest.raises(NotFoundError):
        erase(b, "ac")
    assert erase_tenant(b) == 1
    assert a.messages("ac") == [{"role": "user", "content": "a"}]
    with pytest.raises(ErasedError):
        b.messages("bc")


def test_a_wrong_master_key_or_no_key_cannot_read(make_store: MakeStore) -> None:
    """Another master key raises IntegrityError; a store without encryption raises ValidationError."""
    _encrypted(make_store).start_conversation("c1", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(IntegrityError, match="master key"):
        _encrypted(make_store, key=os.urandom(32)).messages("c1")
    with pytest.raises(ValidationError, match="encrypted"):
        make_store().messages("c1")


def test_altered_ciphertext_is_an_integrity_error(tmp_path: Path) -> None:
    """A flipped ciphertext byte, written into the file with its triggers dropped, fails decryption and verify."""
    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", encryption=KEY)
    store.start_conversation("c1", messages=[{"role": "user", "content": "hello"}])
    where = "sid = (SELECT sid FROM streams WHERE stream_id = 'c1') AND version = 2"
    conn = unguarded(str(path))
    payload = conn.execute(f"SELECT payload FROM events WHERE {where}").fetchone()[0]
    blob = bytearray(base64.b64decode(payload[len("enc:v1:") :]))
    blob[20] ^= 1
    conn.execute(f"UPDATE events SET payload = ? WHERE {where}", ("enc:v1:" + base64.b64encode(blob).decode(),))
    conn.close()
    with pytest.raises(IntegrityError, match="altered"):
        store.messages("c1")
    assert [(p.kind, p.version) for p in store.verify().problems] == [("changed", 2)]
    store.close()


def test_erased_key_bytes_leave_the_sqlite_file(tmp_path: Path) -> None:
    """The wrapped key is overwritten in the database file and the WAL, not just unlinked."""
    import sqlite3

    path = tmp_path / "chat.db"
    store = open_store(f"sqlite:///{path}", encryption=KEY)
    store.start_conversation("c1", messages=[{"role": "user", "content": "hello"}])
    wrapped = sqlite3.connect(path).execute("SELECT wrapped FROM data_keys").fetchone()[0]

    def on_disk() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("chat.db"))

    assert wrapped in on_disk()
    erase(store, "c1")
    assert wrapped not in on_disk()
    store.close()


def test_master_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CHATLEDGER_MASTER_KEY turns encryption on; encryption=False keeps it off; bad keys are refused."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    monkeypatch.setenv("CHATLEDGER_MASTER_KEY", generate_master_key())
    with open_store(url) as store:
        store.start_conversation("c1", messages=[{"role": "user", "content": "hello"}])
        assert store.recorder.read_all()[1].payload.startswith("enc:v1:")
    with open_store(url, encryption=False) as store:
        store.start_conversation("c2", messages=[{"role": "user", "content": "plain"}])
        assert "plain" in store.recorder.read_all()[-1].payload
    with open_store(url) as store:
        assert store.messages("c2") == [{"role": "user", "content": "plain"}]
    monkeypatch.setenv("CHATLEDGER_MASTER_KEY", "too-short")
    with pytest.raises(ValidationError, match="CHATLEDGER_MASTER_KEY"):
        open_store(url)
    monkeypatch.delenv("CHATLEDGER_MASTER_KEY")
    with pytest.raises(ValidationError, match="CHATLEDGER_MASTER_KEY"):
        open_store(url, encryption=True)
    with pytest.raises(ValidationError):
        open_store(url, encryption=b"short")
    with open_store(url) as store, pytest.raises(ValidationError, match="erasure needs encryption"):
        erase(store, "c1")

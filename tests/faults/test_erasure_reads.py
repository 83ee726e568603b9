"""Erasing one conversation leaves every other read working: tenant-wide reads, audits, exports,
subscriptions and projections see erased events as markers, and a tenant without the master key
still reads its own plaintext conversations beside another tenant's encrypted ones."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import pytest

from chatledger.adapters.openai_format import export_jsonl
from chatledger.projections import conversation_index, search, tool_audit
from chatledger.store import Store
from chatledger.store.errors import ErasedError
from chatledger.store.events import ErasedEvent, MessageAppended
from chatledger.store.integrity.crypto import EncryptingCodec, erase

MakeStore = Callable[..., Store]
KEY = os.urandom(32)


def _encrypted(make_store: MakeStore, backend: str, tenant: str = "default") -> Store:
    if backend != "memory":
        return make_store(tenant=tenant, encryption=KEY)
    shared = make_store(tenant=tenant).backend
    return make_store(tenant=tenant, codec=EncryptingCodec(KEY, shared.key_store()))


def _two_conversations(store: Store) -> None:
    store.start_conversation("gone", messages=[{"role": "user", "content": "forget me"}])
    store.start_conversation("kept", messages=[{"role": "user", "content": "keep me"}])


def test_tenant_wide_reads_survive_an_erased_conversation(make_store: MakeStore, backend: str) -> None:
    """read_all, iter_all and tool_audit return the erased conversation's events as ErasedEvent markers."""
    store = _encrypted(make_store, backend)
    _two_conversations(store)
    erase(store, "gone")
    events = store.read_all()
    assert len(events) == 4
    erased = [e for e in events if e.conversation_id == "gone"]
    assert erased and all(isinstance(e, ErasedEvent) for e in erased)
    assert erased[0].erased_type == "conversation.started"
    kept = [e for e in events if e.conversation_id == "kept"]
    assert isinstance(kept[1], MessageAppended) and kept[1].message["content"] == "keep me"
    assert [e.event_id for e in store.iter_all()] == [e.event_id for e in events]
    assert tool_audit(store) == []
    with pytest.raises(ErasedError):
        store.messages("gone")


def test_export_skips_erased_conversations(make_store: MakeStore, backend: str) -> None:
    """Exporting every conversation writes the readable ones and skips the erased one."""
    store = _encrypted(make_store, backend)
    _two_conversations(store)
    erase(store, "gone")
    out = io.StringIO()
    assert export_jsonl(store, [c.conversation_id for c in store.conversations()], out) == 1
    assert "keep me" in out.getvalue() and "gone" not in out.getvalue()


def test_a_new_subscription_reads_past_an_erased_conversation(make_store: MakeStore, backend: str) -> None:
    """A subscription created after an erasure receives every event, the erased ones as markers."""
    store = _encrypted(make_store, backend)
    _two_conversations(store)
    erase(store, "gone")
    seen: list[str] = []
    sub = store.subscribe("after-erase", lambda e: seen.append(type(e).__name__))
    sub.run_once()
    assert seen.count("ErasedEvent") == 2 and seen.count("MessageAppended") == 1


def test_a_tenant_without_the_master_key_reads_its_plaintext_beside_encrypted_tenants(
    make_store: MakeStore, backend: str
) -> None:
    """Another tenant's encrypted events do not stop a keyless tenant from searching or listing its own."""
    secret = _encrypted(make_store, backend, tenant="secret")
    secret.start_conversation("s1", messages=[{"role": "user", "content": "classified words"}])
    plain = make_store(tenant="plain")
    plain.start_conversation("p1", messages=[{"role": "user", "content": "ordinary words"}])
    assert [h.conversation_id for h in search(plain, "words")] == ["p1"]
    assert [e.conversation_id for e in conversation_index(plain)] == ["p1"]
    assert [e.conversation_id for e in plain.read_all()] == ["p1", "p1"]

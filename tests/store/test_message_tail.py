"""Store.message_tail: the head's version and the messages after a version, on every backend."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from chatledger.store import NotFoundError, Store
from chatledger.store.errors import ErasedError
from chatledger.store.integrity.crypto import EncryptingCodec, erase

MakeStore = Callable[..., Store]
KEY = os.urandom(32)


def test_a_tail_holds_exactly_the_messages_after_a_version(make_store: MakeStore) -> None:
    """Entries after ``after`` up to the head's version, with their versions; earlier tails plus it are the whole."""
    store = make_store()
    store.start_conversation("c", messages=[{"role": "user", "content": "one"}])
    first = store.message_tail("c")
    assert first.entries == store.message_entries("c") and not first.erased
    store.append("c", [{"role": "assistant", "content": "two"}], meta=[{"request": "r"}])
    tail = store.message_tail("c", first.version)
    assert tail.entries == [({"role": "assistant", "content": "two"}, {"request": "r"})]
    assert tail.version == store.version("c") and tail.versions == [tail.version]
    assert first.entries + tail.entries == store.message_entries("c")
    assert tail.created_at == first.created_at
    assert store.message_tail("c", tail.version).entries == []


def test_a_tail_is_scoped_to_the_tenant(make_store: MakeStore) -> None:
    """Another tenant's handle on the same log does not find the conversation."""
    make_store(tenant="a").start_conversation("c", messages=[{"role": "user", "content": "a's"}])
    with pytest.raises(NotFoundError):
        make_store(tenant="b").message_tail("c")


def test_an_erased_conversation_is_read_whole_and_flagged(make_store: MakeStore, backend: str) -> None:
    """A handle that cached the data key gets ErasedError once another handle erased the conversation."""
    if backend == "memory":
        shared = make_store().backend
        reader, eraser = (make_store(codec=EncryptingCodec(KEY, shared.key_store())) for _ in range(2))
    else:
        reader, eraser = make_store(encryption=KEY), make_store(encryption=KEY)
    reader.start_conversation("c", messages=[{"role": "user", "content": "secret"}])
    assert reader.message_tail("c").entries[0][0]["content"] == "secret"  # the key is now cached
    erase(eraser, "c")
    with pytest.raises(ErasedError):
        reader.message_tail("c", 5)

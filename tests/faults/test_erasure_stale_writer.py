"""A writer that appended to a conversation before another process erased it cannot append to it after:
its remembered head (the one-statement append's guess) and its cached data key do not outlive erasure."""

from __future__ import annotations

import os

import pytest

from chatledger.store import open_store
from chatledger.store.errors import ErasedError
from chatledger.store.integrity.crypto import erase

KEY = os.urandom(32)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_append_after_another_process_erased_the_conversation_is_refused(store_url: str, backend: str) -> None:
    """Store B appends (remembering the head and the data key), store A erases, B's next lone append and
    batch append get ErasedError and the log does not change."""
    with open_store(store_url, encryption=KEY) as a, open_store(store_url, encryption=KEY) as b:
        a.start_conversation("c1", messages=[{"role": "user", "content": "hello"}])
        b.append("c1", [{"role": "user", "content": "one"}])
        b.append("c1", [{"role": "user", "content": "two"}])
        erase(a, "c1")
        before = a.recorder.read_all()
        with pytest.raises(ErasedError):
            b.append("c1", [{"role": "user", "content": "after erasure"}])
        with pytest.raises(ErasedError):
            b.append("c1", [{"role": "user", "content": "three"}, {"role": "user", "content": "four"}])
        assert a.recorder.read_all() == before
        assert a.verify().ok

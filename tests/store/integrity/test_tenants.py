"""A store opened for one tenant never reads, writes, lists or exports another tenant's data."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chatledger.adapters.openai_format import export_conversation, import_record
from chatledger.store import ConflictError, Draft, ModelResponseRecorded, NotFoundError, Store
from chatledger.store.backends.recorder import side_stream_id
from chatledger.store.integrity.verify import heads

MakeStore = Callable[..., Store]


def _setup(make_store: MakeStore) -> tuple[Store, Store]:
    a, b = make_store(tenant="a"), make_store(tenant="b")
    a.start_conversation("secret-conv", metadata={"owner": "alice"}, messages=[{"role": "user", "content": "PIN 1234"}])
    with a.transaction() as w:
        side = side_stream_id("secret-conv", "responses")
        w.create_stream(side, "secret-conv", "side")
        w.append(side, [Draft(ModelResponseRecorded, {"key": "k", "response": {"content": "x"}}, key="k")])
    b.start_conversation("bobs", messages=[{"role": "user", "content": "hi"}])
    return a, b


def _same_error(call: Callable[[str], object]) -> None:
    """Asking for another tenant's id fails exactly like asking for an id that does not exist."""
    with pytest.raises(NotFoundError) as theirs:
        call("secret-conv")
    with pytest.raises(NotFoundError) as missing:
        call("no-such-conv")
    assert str(theirs.value).replace("secret-conv", "ID") == str(missing.value).replace("no-such-conv", "ID")


def test_reads_of_another_tenants_conversation_are_not_found(make_store: MakeStore) -> None:
    """events, messages, history, conversation, version and export raise NotFoundError, as for a missing id."""
    _, b = _setup(make_store)
    _same_error(lambda c: b.events(c))
    _same_error(lambda c: b.messages(c))
    _same_error(lambda c: b.history(c))
    _same_error(lambda c: b.conversation(c))
    _same_error(lambda c: b.version(c))
    _same_error(lambda c: export_conversation(b, c))
    _same_error(lambda c: b.verify(c))


def test_writes_to_another_tenants_conversation_are_refused(make_store: MakeStore) -> None:
    """append and side-stream creation are NotFoundError and leave the owner's conversation as it was."""
    a, b = _setup(make_store)
    before = a.events("secret-conv")
    _same_error(lambda c: b.append(c, [{"role": "user", "content": "injected"}]))
    with pytest.raises(NotFoundError), b.transaction() as w:
        w.create_stream(side_stream_id("secret-conv", "evil"), "secret-conv", "side")
    with pytest.raises(ConflictError):
        b.start_conversation("secret-conv")
    with pytest.raises(ConflictError):
        import_record(b, {"id": "secret-conv", "messages": [{"role": "user", "content": "PIN 1234"}]})
    assert a.events("secret-conv") == before
    assert a.stream_events(side_stream_id("secret-conv", "evil")) == []


def test_listings_and_the_global_log_hold_only_the_tenants_own(make_store: MakeStore) -> None:
    """conversations, read_all, iter_all, stream_events, heads and verify see only the tenant's streams."""
    a, b = _setup(make_store)
    assert [c.conversation_id for c in b.conversations()] == ["bobs"]
    assert {e.conversation_id for e in b.read_all()} == {"bobs"}
    assert {e.tenant for e in b.iter_all(batch=1)} == {"b"}
    assert b.stream_events(side_stream_id("secret-conv", "responses")) == []
    assert b.stream_events(side_stream_id("secret-conv", "responses")) == b.stream_events("nothing-here")
    assert [h[0] for h in heads(b)] == ["bobs"]
    assert b.verify().streams == 1
    assert [c.conversation_id for c in a.conversations()] == ["secret-conv"]
    assert {e.conversation_id for e in a.read_all()} == {"secret-conv"}
    assert len(a.stream_events(side_stream_id("secret-conv", "responses"))) == 1

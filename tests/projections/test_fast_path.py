"""The built-in projections' fast path (raw payloads, whole batches) against their pure folds."""

from __future__ import annotations

import json
import signal
import time
from typing import Any, ClassVar

import pytest

from chatledger.projections import (
    ConversationIndex,
    MessageSearch,
    ProjectionRunner,
    Tables,
    conversation_index,
    default_projections,
    projection_states,
    search,
)
from chatledger.projections.runner import decode_payloads, read_models
from chatledger.projections.tables import Projection, Table
from chatledger.store import Event, Executor, MessageAppended, Store, open_store
from chatledger.store.fork import fork
from chatledger.store.responses import record_response

from .conftest import fill, worker
from .test_runner import dump


class PureOnly:
    """A projection seen through its pure fold only: the runner cannot take its fast path."""

    name: ClassVar[str]
    version: ClassVar[int]
    tables: ClassVar[tuple[Table, ...]]
    types: ClassVar[frozenset[str] | None]

    def __init__(self, inner: Projection) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.version = inner.version  # type: ignore[misc]
        self.tables = inner.tables  # type: ignore[misc]
        self.types = inner.types  # type: ignore[misc]

    def apply(self, tables: Tables, event: Event) -> None:
        self.inner.apply(tables, event)


def varied_log(store: Store) -> None:
    """Conversations with every message shape, tool calls run by the executor, a fork and a side stream."""
    fill(store, conversations=3, messages=4)
    conv = store.start_conversation("shapes", metadata={"ville": "Orléans", "n": [1, 2]})
    store.append(
        conv,
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "name": "zoë", "content": [{"type": "text", "text": "Où est ma valise?"}]},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "big", "x": 1},
        ],
        meta=[None, {"source": "agent", "big": 2**70}, None, None],
    )
    call = {"id": "t1", "type": "function", "function": {"name": "echo", "arguments": json.dumps({"text": "hi"})}}
    failing = {"id": "t2", "type": "function", "function": {"name": "boom", "arguments": "{}"}}
    assistant = {"role": "assistant", "content": "checking", "tool_calls": [call, failing]}

    def boom() -> str:
        raise RuntimeError("no luck")

    store.append(conv, [assistant])
    Executor(store, {"echo": lambda text: text, "boom": boom}).execute(conv, assistant)
    store.append(conv, [{"role": "assistant", "content": "done"}])
    record_response(store, conv, "k1", {"choices": []})
    fork(store, conv, 3, new_id="shapes-fork")
    store.append("shapes-fork", [{"role": "user", "content": "and the fork?"}])
    store.append("c0", [{"role": "tool", "tool_call_id": "x", "content": "late"}])


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_fast_path_leaves_the_same_rows_as_the_pure_fold(store: Store, batch_size: int) -> None:
    """Rebuilt through apply_batch or through apply, every built-in projection holds the same rows."""
    varied_log(store)
    projections = default_projections()
    tables = [t for p in projections for t in p.tables]
    assert any(hasattr(p, "apply_batch") for p in projections)
    ProjectionRunner(store, projections, batch_size=batch_size).rebuild()
    fast = dump(store, *tables)
    ProjectionRunner(store, [PureOnly(p) for p in projections], batch_size=batch_size).rebuild()
    pure = dump(store, *tables)
    assert fast == pure
    assert len(fast["message_search"]) > 20 and len(fast["tool_audit"]) == 2
    [shapes] = [r for r in fast["conversation_index"] if r["conversation_id"] == "shapes"]
    assert (shapes["tool_calls"], shapes["open_tool_calls"], shapes["status"]) == (2, 0, "answered")


def test_decoded_payloads_equal_the_events_payloads(store: Store) -> None:
    """decode_payloads yields what decoding the events yields, integers beyond 64 bits included."""
    varied_log(store)
    records = store.recorder.read_all(0, None, None)
    payloads = decode_payloads(store, records, frozenset({MessageAppended.TYPE, "conversation.started"}))
    for record, payload in zip(records, payloads, strict=True):
        if record.type in (MessageAppended.TYPE, "conversation.started"):
            event = store.decode(record)
            assert payload is not None and set(payload) <= set(event.payload())
            for name, value in event.payload().items():
                assert payload.get(name, type(event).model_fields[name].default) == value
        else:
            assert payload is None
    assert any(p and (p.get("meta") or {}).get("big") == 2**70 for p in payloads)


def test_search_rebuild_killed_mid_way_resumes_to_a_full_index(db_url: str) -> None:
    """kill -9 during a search rebuild leaves it resumable: the next search finds every message once."""
    store = open_store(db_url)
    fill(store, conversations=20, messages=9)
    ProjectionRunner(store, [MessageSearch()]).catch_up()
    proc = worker("rebuild-search", db_url, "15", "0.05")
    try:
        deadline = time.monotonic() + 20
        events = 200  # the rebuild starts from zero, then climbs back
        while not 30 <= events < 200 and time.monotonic() < deadline:
            events = next((s.events for s in projection_states(store) if s.name == "search"), 0)
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    [state] = [s for s in projection_states(store) if s.name == "search"]
    assert 0 < state.events < 200  # killed part-way through the rebuild
    hits = search(store, "refund policy", limit=500)
    assert len(hits) == 20 * 9 == len({(h.conversation_id, h.version) for h in hits})
    store.append("c3", [{"role": "user", "content": "a kumquat refund"}])
    assert [h.conversation_id for h in search(store, "kumquat")] == ["c3"]
    store.close()


class Crash(Exception):
    """Stands for a runner killed between two batches."""


def test_rebuild_cut_short_is_searchable_after_the_next_catch_up(store: Store) -> None:
    """A rebuild that dies part-way resumes on the next catch-up, and search then finds every message."""
    fill(store, conversations=6, messages=4)
    ProjectionRunner(store, [MessageSearch()]).catch_up()

    def crash(done: int) -> None:
        if done >= 10:
            raise Crash

    with pytest.raises(Crash):
        ProjectionRunner(store, [MessageSearch()], batch_size=5).rebuild(progress=crash)
    assert len(search(store, "refund policy", limit=100)) == 6 * 4
    store.append("c1", [{"role": "user", "content": "a kumquat refund"}])
    [hit] = search(store, "kumquat")
    assert hit.conversation_id == "c1"
    assert len(search(store, "refund", limit=100, catch_up=False)) == 6 * 4 + 1


def test_rebuilt_index_and_search_stay_within_the_tenant(make_store: Any) -> None:
    """After a rebuild over two tenants' logs, each tenant's index and search show only its own rows."""
    acme, other = make_store("acme"), make_store("other")
    fill(acme, conversations=3, messages=2, prefix="a")
    fill(other, conversations=2, messages=2, prefix="o")
    ProjectionRunner(acme, batch_size=7).rebuild()
    assert {e.conversation_id for e in conversation_index(acme, catch_up=False)} == {"a0", "a1", "a2"}
    assert {e.conversation_id for e in conversation_index(other, catch_up=False)} == {"o0", "o1"}
    assert {h.conversation_id for h in search(other, "refund", limit=50, catch_up=False)} == {"o0", "o1"}
    assert {h.conversation_id for h in search(acme, "refund", limit=50)} == {"a0", "a1", "a2"}
    assert len(read_models(acme).rows(ConversationIndex.tables[0], {})) == 5


def test_fast_path_reads_encrypted_payloads(tmp_path: Any) -> None:
    """With encryption at rest the fast path decrypts through the store's codec: same rows as the pure fold."""
    from chatledger.store.integrity.crypto import generate_master_key

    store = open_store(f"sqlite:///{tmp_path / 'sealed.db'}", encryption=generate_master_key())
    fill(store, conversations=3, messages=3)
    assert store.recorder.read_all(0, 1, None)[0].payload.startswith("enc:")
    projections = [ConversationIndex(), MessageSearch()]
    tables = [t for p in projections for t in p.tables]
    ProjectionRunner(store, projections).rebuild()
    fast = dump(store, *tables)
    ProjectionRunner(store, [PureOnly(p) for p in projections]).rebuild()
    assert dump(store, *tables) == fast
    assert len(search(store, "refund", limit=50)) == 9
    store.close()

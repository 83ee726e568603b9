"""Pages of the log: what the runner's readers hand batch folds, against the records read_all returns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from chatledger.projections import pages
from chatledger.projections.pages import Page, RecordPage, ScanPage, log_reader
from chatledger.projections.runner import decode_payloads
from chatledger.store import Executor, MessageAppended, Store, open_store
from chatledger.store.backends.recorder import Record

from .conftest import fill
from .test_fast_path import varied_log

FIELDS = [f for f in Record._fields if f != "hash"]  # a page has every field of a record but its hash
TOOL_TYPES = frozenset({"tool_call.requested", "tool_call.succeeded"})


def columns(page: Page) -> dict[str, list[Any]]:
    """A page's columns, payloads as text."""
    out = {f: list(getattr(page, f)) for f in FIELDS}
    out["payload"] = [p.decode() if isinstance(p, bytes) else p for p in out["payload"]]
    return out


def fields(records: list[Record]) -> dict[str, list[Any]]:
    """The same columns, taken from records."""
    return {f: [getattr(r, f) for r in records] for f in FIELDS}


def read_pages(store: Store, size: int) -> list[Page]:
    """The whole log, a page of ``size`` events at a time, through the runner's reader."""
    reader, after, out = log_reader(store.backend), 0, []
    while len(page := reader.read(after, size)):
        out.append(page)
        after = page.position[-1]
    return out


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_pages_hold_what_the_records_hold(make_store: Callable[..., Store], size: int) -> None:
    """Read page by page, every column equals that field of read_all's records, and the full
    records a page gives the pure folds are read_all's, for all types or a few."""
    store, other = make_store(), make_store("other")
    varied_log(store)
    fill(other, conversations=2, messages=3, prefix="o")
    records = store.recorder.read_all(0, None, None)
    start = 0
    for page in read_pages(store, size):
        expected = records[start : start + len(page)]
        start += len(page)
        assert columns(page) == fields(expected)
        assert page.records(None) == expected
        assert page.records(TOOL_TYPES) == [r for r in expected if r.type in TOOL_TYPES]
        assert page.records(frozenset({"no.such.type"})) == []
    assert start == len(records) > 40
    assert {r.tenant for r in records} == {"default", "other"}


def test_sqlite_pages_read_the_table(tmp_path: Any) -> None:
    """A SQLite log is read from its own table; other backends through read_all."""
    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}")
    fill(store, conversations=1, messages=2)
    assert isinstance(log_reader(store.backend).read(0, 10), ScanPage)
    assert isinstance(log_reader(open_store("memory://").backend).read(0, 10), RecordPage)
    store.close()


def test_sqlite_reader_names_what_it_meets_later(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader kept across catch-ups names streams and event types made after it started, also
    when its stream cache fills up and starts over."""
    monkeypatch.setattr(pages, "_CACHED_STREAMS", 4)
    monkeypatch.setattr(pages, "_AHEAD", 2)
    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}")
    fill(store, conversations=3, messages=2)
    reader = log_reader(store.backend)
    first = reader.read(0, 1000)
    assert columns(first) == fields(store.recorder.read_all(0, None, None))
    conv = store.start_conversation("later", metadata={"n": 1})
    call = {"id": "t1", "type": "function", "function": {"name": "echo", "arguments": '{"text": "hi"}'}}
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    store.append(conv, [assistant])
    Executor(store, {"echo": lambda text: text}).execute(conv, assistant)
    fill(store, conversations=4, messages=1, prefix="d")
    after = first.position[-1]
    for size in (2, 1000):
        page = reader.read(after, size)
        assert columns(page) == fields(store.recorder.read_all(after, size, None))
    rest = reader.read(after, 1000)
    assert {"tool_call.requested", "tool_call.succeeded"} <= set(rest.type)
    assert rest.records(TOOL_TYPES) == [r for r in store.recorder.read_all(after, None, None) if r.type in TOOL_TYPES]
    store.close()


def test_folds_get_payloads_as_stored_and_ids_from_the_page(store: Store) -> None:
    """The runner's payloads leave a message's id to the page (its key, else its event id);
    decode_payloads fills it in as Store.decode does when asked to (the default)."""
    conv = store.start_conversation("ids")
    store.append(
        conv,
        [{"role": "user", "content": "with id"}, {"role": "user", "content": "without"}],
        message_ids=["m-1", None],
    )
    [page] = read_pages(store, 100)
    types = frozenset({MessageAppended.TYPE})
    bare = decode_payloads(store, page, types, keys=False)
    full = decode_payloads(store, page, types)
    ids = [key if key is not None else event_id for key, event_id in zip(page.key, page.event_id, strict=True)]
    for kind, payload, filled, message_id in zip(page.type, bare, full, ids, strict=True):
        if kind != MessageAppended.TYPE:
            assert payload is None and filled is None
            continue
        assert payload is not None and filled is not None
        assert "message_id" not in payload and filled == {**payload, "message_id": message_id}
    assert ids[1:] == ["m-1", page.event_id[2]]

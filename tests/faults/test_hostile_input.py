"""Hostile input through the public API: a typed error naming the field, nothing written.

And whatever is stored can be read back from a request handler's stack depth: payloads
nest at most ``MAX_NESTING`` levels, checked on write, so every read path works 200
frames deep and in a thread with a small stack.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.openai_format import export_conversation
from chatledger.projections import chat_history, conversation_index, search, tool_audit
from chatledger.store import Store, ValidationError, fork, open_store
from chatledger.store.handle import MAX_NESTING


def _rows(store: Store) -> tuple[list[Any], list[Any]]:
    return list(store.recorder.iter_all(0, 1000, None)), store.recorder.list_heads("conversation", None)


def _nested(depth: int) -> Any:
    """A value nesting ``depth`` lists (a depth of 0 is a string)."""
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A SQLite store holding one conversation, ``base``."""
    with open_store(f"sqlite:///{tmp_path / 'h.db'}") as s:
        s.start_conversation("base", messages=[{"role": "user", "content": "keep me"}])
        yield s


CASES: dict[str, tuple[str, Callable[[Store], object]]] = {
    "metadata list": ("metadata", lambda s: s.start_conversation(metadata=[1, 2])),  # type: ignore[arg-type]
    "metadata text": ("metadata", lambda s: s.start_conversation(metadata="abc")),  # type: ignore[arg-type]
    "meta text": ("meta[0]", lambda s: s.append("base", [{"role": "user", "content": "x"}], meta=["abc"])),  # type: ignore[list-item]
    "meta list": ("meta[0]", lambda s: s.append("base", [{"role": "user", "content": "x"}], meta=[[1, 2]])),  # type: ignore[list-item]
    "fork metadata surrogate": ("metadata", lambda s: fork(s, "base", metadata={"a": "\ud800"})),
    "fork metadata list": ("metadata", lambda s: fork(s, "base", metadata=[1])),  # type: ignore[arg-type]
    "as_of 2**70": ("as_of", lambda s: s.messages("base", as_of=2**70)),
    "history as_of 2**70": ("as_of", lambda s: s.history("base", as_of=2**70)),
    "events after 2**70": ("after", lambda s: s.events("base", after=2**70)),
    "read_all after 2**70": ("after", lambda s: s.read_all(after=2**70)),
    "messages nested 985 deep": (
        "messages[0]",
        lambda s: s.append("base", [{"role": "user", "content": "x", "extra": _nested(985)}]),
    ),
    "messages nested one past the limit": (
        "messages[0]",
        lambda s: s.append("base", [{"role": "user", "content": "x", "extra": _nested(MAX_NESTING)}]),
    ),
    "metadata nested one past the limit": (
        "metadata",
        lambda s: s.start_conversation(metadata={"k": _nested(MAX_NESTING)}),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_values_are_typed_errors_that_write_nothing(store: Store, case: str) -> None:
    """Non-object metadata, surrogates in fork metadata, huge versions and over-deep messages raise
    ValidationError naming the field, and the log is unchanged (called 100 frames deep, as from a
    request handler)."""
    field, call = CASES[case]
    before = _rows(store)
    with pytest.raises(ValidationError) as caught:
        _deep_stack(100, lambda: call(store))
    assert caught.value.field == field
    assert _rows(store) == before


def test_a_non_numeric_url_option_is_a_typed_error(tmp_path: Path) -> None:
    """``?busy_timeout_ms=abc`` raises ValidationError naming the option, and creates no file."""
    path = tmp_path / "x.db"
    with pytest.raises(ValidationError) as caught:
        open_store(f"sqlite:///{path}?busy_timeout_ms=abc")
    assert caught.value.field == "busy_timeout_ms"
    assert not path.exists()


@pytest.mark.parametrize(
    ("query", "options", "field"),
    [
        ("&pool_min=abc", {}, "pool_min"),
        ("&timeout=nan", {}, "timeout"),
        ("", {"busy_timeout_ms": 5}, "busy_timeout_ms"),
        ("", {"pool_max": [1]}, "pool_max"),
    ],
)
def test_postgres_url_options_are_typed_errors(
    postgres_url: str, query: str, options: dict[str, Any], field: str
) -> None:
    """A non-numeric PostgreSQL pool option or an option PostgreSQL stores do not take raises
    ValidationError naming it (not a TypeError or ValueError from the driver's pool)."""
    with pytest.raises(ValidationError) as caught:
        open_store(postgres_url + query, **options)
    assert caught.value.field == field


@pytest.mark.parametrize("query", ['"', '""', 'a"b', "NOT", "a OR", "*", "(", "x:y", "-", "^"])
def test_search_takes_any_query_literally(store: Store, query: str) -> None:
    """Quotes and FTS operators in a search query are searched for, never a driver error."""
    store.append("base", [{"role": "user", "content": 'he said "hi" NOT OR * ( x:y'}])
    assert isinstance(search(store, query), list)


def _deep_stack(frames: int, call: Callable[[], object]) -> object:
    if frames == 0:
        return call()
    return _deep_stack(frames - 1, call)


def _read_everything(store: Store, conv: str) -> None:
    """Every read path of a conversation: log, history, projections, export."""
    assert store.messages(conv)[1]["extra"] == _nested(MAX_NESTING - 1)
    store.events(conv)
    store.history(conv)
    store.read_all()
    assert store.conversation(conv).metadata["k"] == _nested(MAX_NESTING - 1)
    chat_history(store, conv)
    export_conversation(store, conv)
    search(store, "deep")
    conversation_index(store)
    tool_audit(store)


def test_payloads_at_the_nesting_limit_read_back_from_a_deep_stack(tmp_path: Path) -> None:
    """A message and metadata at the nesting limit are stored, and every read path returns them
    200 frames deep and in a thread with a 256 KiB stack."""
    url = f"sqlite:///{tmp_path / 'deep.db'}"
    with open_store(url) as store:
        conv = store.start_conversation(
            metadata={"k": _nested(MAX_NESTING - 1)},
            messages=[
                {"role": "user", "content": "deep one"},
                {"role": "assistant", "content": "deep two", "extra": _nested(MAX_NESTING - 1)},
            ],
        )
    with open_store(url) as store:
        _deep_stack(200, lambda: _read_everything(store, conv))
    failures: list[BaseException] = []

    def in_thread() -> None:
        try:
            with open_store(url) as s:
                _deep_stack(30, lambda: _read_everything(s, conv))
        except BaseException as exc:  # reported to the test thread
            failures.append(exc)

    old = threading.stack_size(256 * 1024)
    try:
        thread = threading.Thread(target=in_thread)
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join()
    assert failures == []

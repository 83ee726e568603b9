"""Every public entry point, thrown hostile values: only chatledger errors come out, and a
refused call leaves the log as it was.

Covers the Store's methods, fork, the projections' read functions, open_store's options
and the CLI's flags. A value of the wrong type, out of range, deeply nested or full of
control characters is a ValidationError (or NotFoundError) naming the field, never a
TypeError, OverflowError, RecursionError or driver error from inside.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatledger.adapters.cli.main import main as cli
from chatledger.projections import chat_history, conversation_index, search, tool_audit
from chatledger.store import ChatledgerError, Store, fork, open_store


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": [value]}
    return value


class _Opaque:
    """An object no JSON encoder or driver knows."""


STRINGS = [
    "",
    " ",
    '"',
    "'; DROP TABLE events; --",
    "nul\x00inside",
    "\x1f",
    "lone \ud800",
    "x" * 600,
    "../etc/passwd",
    "NOT",
    "*",
    "-1",
    "1e400",
    "9" * 30,
]
HOSTILE: list[Any] = [
    *STRINGS,
    None,
    True,
    -1,
    0,
    2**63,
    2**70,
    -(2**70),
    math.nan,
    math.inf,
    1.5,
    b"bytes",
    [],
    [1, "a"],
    {},
    {1: "int key"},
    {"k": "\ud800"},
    _nested(600),
    _Opaque(),
    ("t", "u"),
]
hostile = st.sampled_from(range(len(HOSTILE))).map(lambda i: HOSTILE[i])

MSG = {"role": "user", "content": "hi"}

# name -> a call of one public entry point with the hostile value in one argument.
CALLS: dict[str, Callable[[Store, Any], object]] = {
    "start_conversation(conversation_id)": lambda s, v: s.start_conversation(v),
    "start_conversation(metadata)": lambda s, v: s.start_conversation(metadata=v),
    "start_conversation(messages)": lambda s, v: s.start_conversation(messages=v),
    "start_conversation(message)": lambda s, v: s.start_conversation(messages=[v]),
    "start_conversation(message_ids)": lambda s, v: s.start_conversation(messages=[MSG], message_ids=v),
    "start_conversation(forked_from)": lambda s, v: s.start_conversation(forked_from=v),
    "append(conversation_id)": lambda s, v: s.append(v, [MSG]),
    "append(content)": lambda s, v: s.append("base", [{"role": "user", "content": v}]),
    "append(extra field)": lambda s, v: s.append("base", [{"role": "user", "content": "x", "extra": v}]),
    "append(expected_version)": lambda s, v: s.append("base", [MSG], expected_version=v),
    "append(message_ids)": lambda s, v: s.append("base", [MSG], message_ids=v),
    "append(message_id)": lambda s, v: s.append("base", [MSG], message_ids=[v]),
    "append(meta)": lambda s, v: s.append("base", [MSG], meta=v),
    "append(meta item)": lambda s, v: s.append("base", [MSG], meta=[v]),
    "events(conversation_id)": lambda s, v: s.events(v),
    "events(after)": lambda s, v: s.events("base", after=v),
    "events(limit)": lambda s, v: s.events("base", limit=v),
    "messages(as_of)": lambda s, v: s.messages("base", as_of=v),
    "history(as_of)": lambda s, v: s.history("base", as_of=v),
    "conversation(id)": lambda s, v: s.conversation(v),
    "version(id)": lambda s, v: s.version(v),
    "conversations(limit)": lambda s, v: s.conversations(v),
    "conversations(metadata)": lambda s, v: s.conversations(metadata=v),
    "conversations(since)": lambda s, v: s.conversations(since=v),
    "read_all(after)": lambda s, v: s.read_all(after=v),
    "read_all(limit)": lambda s, v: s.read_all(limit=v),
    "iter_all(after)": lambda s, v: list(s.iter_all(after=v)),
    "stream_events(stream_id)": lambda s, v: s.stream_events(v),
    "fork(conversation_id)": lambda s, v: fork(s, v),
    "fork(at_version)": lambda s, v: fork(s, "base", v),
    "fork(new_id)": lambda s, v: fork(s, "base", new_id=v),
    "fork(metadata)": lambda s, v: fork(s, "base", metadata=v),
    "search(query)": lambda s, v: search(s, v),
    "search(limit)": lambda s, v: search(s, "hi", limit=v),
    "chat_history(as_of)": lambda s, v: chat_history(s, "base", v),
    "tool_audit(conversation_id)": lambda s, v: tool_audit(s, v),
    "tool_audit(tool)": lambda s, v: tool_audit(s, tool=v),
    "conversation_index(status)": lambda s, v: conversation_index(s, status=v),
    "conversation_index(order_by)": lambda s, v: conversation_index(s, order_by=v),
    "conversation_index(limit)": lambda s, v: conversation_index(s, limit=v),
}


def _rows(store: Store) -> tuple[list[Any], list[Any]]:
    return list(store.recorder.iter_all(0, 1000, None)), store.recorder.list_heads("conversation", None)


@pytest.fixture(scope="module", params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """One store per backend with a conversation ``base``, shared by the examples."""
    path = tmp_path_factory.mktemp("hostile_api") / "api.db"
    with open_store(f"sqlite:///{path}" if request.param == "sqlite" else "memory://") as s:
        s.start_conversation("base", messages=[MSG])
        yield s


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(call=st.sampled_from(sorted(CALLS)), value=hostile)
def test_store_entry_points_raise_only_chatledger_errors(store: Store, call: str, value: Any) -> None:
    """A hostile value in any argument of a Store method, fork or a projection read either works
    or raises a ChatledgerError, and a refused call writes nothing."""
    before = _rows(store)
    try:
        CALLS[call](store, value)
    except ChatledgerError:
        assert _rows(store) == before
    assert store.messages("base")[0] == MSG


OPTIONS = [
    "url",
    "tenant",
    "max_event_bytes",
    "signing_key",
    "encryption",
    "redactor",
    "synchronous",
    "busy_timeout_ms",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS), value=hostile)
def test_open_store_options_raise_only_chatledger_errors(tmp_path: Path, option: str, value: Any) -> None:
    """A hostile value for any open_store option opens a store or raises a ChatledgerError."""
    url = f"sqlite:///{tmp_path / 'opt.db'}"
    if option == "url" and not value:
        return  # an empty URL means the default, chatledger.db in the working directory
    try:
        store = open_store(value) if option == "url" else open_store(url, **{option: value})
    except ChatledgerError:
        return
    store.close()


FLAGS = [
    ["show", "{v}"],
    ["show", "base", "--as-of", "{v}"],
    ["conversations", "--limit", "{v}"],
    ["conversations", "--where", "{v}"],
    ["conversations", "--since", "{v}"],
    ["search", "{v}"],
    ["search", "hi", "--limit", "{v}"],
    ["audit", "--conversation", "{v}"],
    ["export", "{v}"],
    ["verify", "{v}"],
    ["--tenant", "{v}", "show", "base"],
    ["fork", "base", "--at", "{v}"],
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.sampled_from(range(len(FLAGS))), value=st.sampled_from([s for s in STRINGS if "\x00" not in s]))
def test_cli_flags_end_in_an_exit_code_never_a_traceback(
    store: Store, tmp_path_factory: pytest.TempPathFactory, flags: int, value: str
) -> None:
    """Any hostile value for a CLI flag ends with exit code 0, 1 (an error line) or 2 (usage)."""
    argv = ["--db", store.url, *[a.replace("{v}", value) for a in FLAGS[flags]]]
    before = _rows(store)
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = cli(argv)
        except SystemExit as exc:
            code = exc.code  # argparse's usage errors
    assert code in (0, 1, 2), err.getvalue()
    assert "Traceback" not in err.getvalue()
    if code != 0:
        assert _rows(store) == before

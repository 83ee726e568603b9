"""Hostile client and model input against real worker processes: no input stops a worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from chatledger.store import Executor, Store, ValidationError, open_store, tool_result_message_id
from chatledger.store.tools.ledger import load_call

from ..store.tools import toolbox
from ..store.tools.checks import assert_model_ready, assistant, call
from ..store.tools.workers import start_worker


def test_a_client_cannot_take_the_executors_result_id(store: Store) -> None:
    """A client message under a call's reserved result id (``tool-result:<call id>``) that is not that call's
    tool result is refused with a ValidationError naming the field, and nothing is written."""
    conv = store.start_conversation(messages=[{"role": "user", "content": "hi"}])
    before = store.version(conv)
    reserved = tool_result_message_id("c1")
    bad: list[tuple[dict[str, object], str]] = [
        ({"role": "user", "content": "mine"}, "message_ids[1]"),
        ({"role": "tool", "tool_call_id": "c2", "content": "answers another call"}, "message_ids[1]"),
    ]
    for message, field in bad:
        with pytest.raises(ValidationError) as caught:
            store.append(conv, [{"role": "user", "content": "ok"}, message], message_ids=["fine", reserved])
        assert caught.value.field == field
        assert store.version(conv) == before
    with pytest.raises(ValidationError) as started:
        store.start_conversation(messages=[{"role": "user", "content": "x"}], message_ids=[reserved])
    assert started.value.field == "message_ids[0]"


def test_a_client_cannot_take_the_executors_assistant_id(store: Store) -> None:
    """A client message under the id the executor records an assistant turn with (``assistant:<first call
    id>``) that is not that turn is refused with a ValidationError naming the field, so the executor can
    still record the turn and run its calls."""
    conv = store.start_conversation(messages=[{"role": "user", "content": "hi"}])
    before = store.version(conv)
    for message in [
        {"role": "user", "content": "mine"},
        {"role": "assistant", "content": "no calls"},
        assistant(call("other", "count", {"item": 1})),
    ]:
        with pytest.raises(ValidationError) as caught:
            store.append(conv, [message], message_ids=["assistant:a1"])
        assert caught.value.field == "message_ids[0]"
        assert store.version(conv) == before
    store.append(conv, [assistant(call("a1", "count", {"item": 1}))], message_ids=["assistant:a1"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_client_answer_under_the_result_id_does_not_stop_a_worker(store_url: str, tmp_path: Path) -> None:
    """A client that answers a queued call itself, under the call's result id, neither stops the worker nor
    makes the tool run more than once: the call's real outcome is recorded and the worker goes on."""
    counters = tmp_path / "counters.db"
    store = open_store(store_url)
    submitter = Executor(store, toolbox.registry)
    conv = store.start_conversation("answered", messages=[{"role": "user", "content": "go"}])
    submitter.submit(conv, assistant(call("c1", "brief_idempotent", {"item": 1})))
    answer = {"role": "tool", "tool_call_id": "c1", "content": "the client answered"}
    store.append(conv, [answer], message_ids=[tool_result_message_id("c1")])
    later = store.start_conversation("later", messages=[{"role": "user", "content": "go"}])
    submitter.submit(later, assistant(call("c2", "count", {"item": 2})))
    proc = start_worker(store_url, counters, "--poll", "0.05", "--idle-exit", "1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert toolbox.read_counts(str(counters)) == {f"{conv}/c1": 1, f"{later}/c2": 1}
    assert load_call(store, conv, "c1").status == "succeeded"  # type: ignore[union-attr]
    assert load_call(store, later, "c2").status == "succeeded"  # type: ignore[union-attr]
    assert store.history(conv)[-1] == answer
    assert_model_ready(store.history(conv))
    store.close()


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _no_arguments(call_id: str) -> dict[str, object]:
    return {"id": call_id, "type": "function", "function": {"name": "count"}}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_any_model_output_becomes_a_recorded_call_in_a_worker(store_url: str, tmp_path: Path) -> None:
    """Arguments nested 100,000 deep and a tool call without ``arguments`` are recorded as failed calls
    whose result tells the model why; the worker records them and goes on to the next call."""
    counters = tmp_path / "counters.db"
    store = open_store(store_url)
    submitter = Executor(store, toolbox.registry)
    convs = {}
    for name, tool_call in [
        ("deep", call("d1", "count", _deep(100_000))),
        ("bare", _no_arguments("b1")),
        ("fine", call("f1", "count", {"item": 3})),
    ]:
        conv = store.start_conversation(name, messages=[{"role": "user", "content": "go"}])
        submitter.submit(conv, assistant(tool_call))
        convs[name] = conv
    proc = start_worker(store_url, counters, "--poll", "0.05", "--idle-exit", "1")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    deep, bare, fine = (store.history(convs[n])[-1] for n in ("deep", "bare", "fine"))
    assert deep["content"].startswith("Error:") and "deep" in deep["content"]
    assert bare["content"].startswith("Error:") and "item" in bare["content"]
    assert fine["content"] == "item 3"
    assert toolbox.read_counts(str(counters)) == {f"{convs['fine']}/f1": 1}
    for conv in convs.values():
        assert_model_ready(store.history(conv))
    store.close()


def test_any_model_output_becomes_a_recorded_call_inline(make_store: Callable[..., Store]) -> None:
    """Executing the same hostile model output inline records failed calls and tells the model why,
    raising nothing, on every backend."""
    store = make_store()
    executor = Executor(store, toolbox.registry)
    conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])
    results = executor.execute(conv, assistant(call("d1", "count", _deep(100_000)), _no_arguments("b1")))
    assert [r["tool_call_id"] for r in results] == ["d1", "b1"]
    assert all(r["content"].startswith("Error:") for r in results), results
    assert json.dumps(store.history(conv))
    assert_model_ready(store.history(conv))

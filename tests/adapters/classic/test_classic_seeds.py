"""The AutoGen scaling write-ups (``/work/shared/seeds``) reproduced with classic agents.

Each broken pattern is first run with stock AutoGen, to show the duplicate or the
missed callback happen (so each test can fail), then with chatledger, where every
side-effect counter ends at exactly one per distinct tool call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.classic import chatledger_pair
from chatledger.store import MessageAppended, Store, open_store

from ...conftest import REPO
from .fakes import LLM_CONFIG, ScriptedModelClient, async_weather_tool, runs, weather_tool

autogen = pytest.importorskip("autogen")


def _ends(message: dict[str, Any]) -> bool:
    return not message.get("tool_calls") and message.get("role") != "tool"


def stock_pair(tool: Any, **client: Any) -> tuple[Any, Any]:
    """Stock classic agents, the way the write-ups build them (no chatledger)."""
    assistant = autogen.AssistantAgent("assistant", llm_config=LLM_CONFIG)
    user = autogen.UserProxyAgent(
        "user", human_input_mode="NEVER", code_execution_config=False, is_termination_msg=_ends
    )
    autogen.register_function(tool, caller=assistant, executor=user, description="Get the weather.")
    assistant.register_model_client(ScriptedModelClient, **client)
    return assistant, user


def ledger_pair(store: Store, conv: str, tool: Any, **options: Any) -> tuple[Any, Any]:
    """Fresh chatledger agents for one request."""
    return chatledger_pair(
        store, conv, llm_config=LLM_CONFIG, tools=[tool], model_client=ScriptedModelClient, **options
    )


def tool_results(store: Store, conv: str) -> list[str]:
    """The tool-call ids answered in a conversation, one entry per stored result."""
    return [str(m["tool_call_id"]) for m in store.history(conv) if m["role"] == "tool"]


# -- 1. shared agents reused across concurrent requests ----------------------------------------


def test_shared_agents_across_concurrent_requests_cross_the_streams(tmp_path: Path) -> None:
    """Broken: two concurrent requests on one shared pair send the model each other's messages."""
    effects = tmp_path / "effects"
    seen: list[list[dict[str, Any]]] = []
    assistant, user = stock_pair(async_weather_tool(effects), seen=seen)

    async def handle(prompt: str) -> str:
        return str((await user.a_initiate_chat(assistant, message=prompt, silent=True)).summary)

    async def both() -> list[Any]:
        return list(
            await asyncio.gather(handle("Weather in Rome?"), handle("Weather in Oslo?"), return_exceptions=True)
        )

    asyncio.run(both())
    mixed = [call for call in seen if "Rome" in json.dumps(call) and "Oslo" in json.dumps(call)]
    assert mixed  # a model request of one user carried the other user's conversation


def test_fresh_chatledger_agents_per_request_keep_concurrent_requests_apart(store: Store, tmp_path: Path) -> None:
    """Fixed: fresh agents per request; each request gets its answer and each tool call runs once."""
    effects = tmp_path / "effects"

    async def handle(conv: str, prompt: str) -> str:
        assistant, user = ledger_pair(store, conv, async_weather_tool(effects))
        result = await user.a_initiate_chat(assistant, message=prompt, clear_history=False, silent=True)
        return str(result.summary)

    async def both() -> list[str]:
        return list(await asyncio.gather(handle("c-rome", "Weather in Rome?"), handle("c-oslo", "Weather in Oslo?")))

    assert asyncio.run(both()) == ["Forecast: sunny in Rome", "Forecast: sunny in Oslo"]
    assert sorted(runs(effects)) == ["Oslo", "Rome"]
    for conv, other in (("c-rome", "Oslo"), ("c-oslo", "Rome")):
        assert other not in json.dumps(store.history(conv))
    for conv in ("c-rome", "c-oslo"):
        assert [m["role"] for m in store.history(conv)] == ["user", "assistant", "tool", "assistant"]
        assert len(tool_results(store, conv)) == 1


def test_the_same_request_handled_twice_at_once_converges(store: Store, tmp_path: Path) -> None:
    """Fixed: two threads running one request on one conversation record it once and run its tool once."""
    effects = tmp_path / "effects"
    ready = threading.Barrier(2)
    answers: list[str] = []

    def worker() -> None:
        assistant, user = ledger_pair(store, "c1", weather_tool(effects))
        ready.wait(15)
        result = user.initiate_chat(assistant, message="Weather in Rome?", clear_history=False, silent=True)
        answers.append(str(result.summary))

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert answers == ["Forecast: sunny in Rome"] * 2
    assert runs(effects) == ["Rome"]
    assert [m["role"] for m in store.history("c1")] == ["user", "assistant", "tool", "assistant"]


# -- 2. a retry wrapper that replays the last message with tool_calls -----------------------------


def test_retry_wrapper_runs_the_tool_again_without_chatledger(tmp_path: Path) -> None:
    """Broken: re-processing the last tool-call message, or re-running a failed request, runs the tool again."""
    effects = tmp_path / "effects"
    assistant, user = stock_pair(weather_tool(effects))
    result = user.initiate_chat(assistant, message="Weather in Rome?", silent=True)
    last_call = next(m for m in reversed(result.chat_history) if m.get("tool_calls"))
    user.generate_tool_calls_reply(messages=[last_call])  # the retry "replays the last model output"
    assert runs(effects) == ["Rome", "Rome"]

    effects.unlink()
    for attempt in range(2):
        assistant, user = stock_pair(weather_tool(effects), fail_after_tool=1 - attempt)
        try:
            user.initiate_chat(assistant, message="Weather in Oslo?", silent=True)
            break
        except ConnectionError:
            continue
    assert runs(effects) == ["Oslo", "Oslo"]


def test_retries_reuse_the_recorded_outcome_with_chatledger(store: Store, tmp_path: Path) -> None:
    """Fixed: a failed request retried under its request id, then re-processed again, runs the tool once."""
    effects = tmp_path / "effects"
    summary = None
    for attempt in range(2):
        assistant, user = ledger_pair(
            store, "c1", weather_tool(effects), request_id="job-7", model_client_kwargs={"fail_after_tool": 1 - attempt}
        )
        try:
            summary = user.initiate_chat(
                assistant, message="Weather in Oslo?", clear_history=False, silent=True
            ).summary
            break
        except ConnectionError:
            continue
    assert summary == "Forecast: sunny in Oslo"
    assert runs(effects) == ["Oslo"]
    history = store.history("c1")
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    last_call = next(m for m in reversed(history) if m.get("tool_calls"))
    assistant, user = ledger_pair(store, "c1", weather_tool(effects))
    ok, reply = user.generate_tool_calls_reply(messages=[last_call])
    assert ok and reply is not None and reply["content"] == "sunny in Oslo"
    assert runs(effects) == ["Oslo"]


# -- 3. an accidental double append of an assistant reply -----------------------------------------


def test_double_append_makes_the_next_turn_run_the_tool_again_without_chatledger(tmp_path: Path) -> None:
    """Broken: a tool-call reply appended twice to a hand-kept history is executed again on the next turn."""
    effects = tmp_path / "effects"
    assistant, user = stock_pair(weather_tool(effects))
    history = list(user.initiate_chat(assistant, message="Weather in Rome?", silent=True).chat_history)
    reply = next(m for m in history if m.get("tool_calls"))
    history.append(reply)
    history.append(reply)  # accidental double append
    assistant, user = stock_pair(weather_tool(effects))
    user.generate_tool_calls_reply(messages=history)  # the next turn sees a tool call on top
    assert runs(effects) == ["Rome", "Rome"]


def test_double_append_is_a_no_op_with_chatledger(store: Store, tmp_path: Path) -> None:
    """Fixed: appending the stored reply again changes nothing, and re-processing it runs nothing."""
    effects = tmp_path / "effects"
    assistant, user = ledger_pair(store, "c1", weather_tool(effects))
    user.initiate_chat(assistant, message="Weather in Rome?", clear_history=False, silent=True)
    version = store.version("c1")
    event = next(e for e in store.events("c1") if isinstance(e, MessageAppended) and e.message.get("tool_calls"))
    for _ in range(2):
        store.append("c1", [event.message], message_ids=[event.message_id], meta=[event.meta])
    assert store.version("c1") == version
    assistant, user = ledger_pair(store, "c1", weather_tool(effects))
    user.generate_tool_calls_reply(messages=[*user.chat_messages[assistant], event.message])
    assert runs(effects) == ["Rome"]
    assert len(tool_results(store, "c1")) == 1


# -- 4. parallel workers consuming the same queue item (processes) --------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL several processes can open."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres_url"))


def spawn(mode: str, **args: Any) -> subprocess.Popen[str]:
    """Start one worker process (tests/adapters/classic/workers.py)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.adapters.classic.workers", mode, json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def results(procs: list[subprocess.Popen[str]]) -> Iterator[str]:
    """Each worker's result, in order; a failed worker fails the test with its stderr."""
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        yield json.loads(out.strip().splitlines()[-1])["result"]


def test_two_workers_on_one_queue_item_run_the_tool_twice_without_chatledger(tmp_path: Path) -> None:
    """Broken: two processes consuming the same job both run its tool."""
    effects = tmp_path / "effects"
    job = {"prompt": "Weather in Rome?", "effects": str(effects), "start_at": time.time() + 1.5}
    assert list(results([spawn("stock", **job), spawn("stock", **job)])) == ["Forecast: sunny in Rome"] * 2
    assert runs(effects) == ["Rome", "Rome"]


def test_two_workers_on_one_queue_item_converge_with_chatledger(shared_url: str, tmp_path: Path) -> None:
    """Fixed: two processes handling one job (job id = request id) record one turn and run the tool once."""
    effects = tmp_path / "effects"
    job = {
        "url": shared_url,
        "conversation": "c1",
        "job": "job-42",
        "prompt": "Weather in Rome?",
        "effects": str(effects),
        "start_at": time.time() + 1.5,
    }
    assert list(results([spawn("ledger", **job), spawn("ledger", **job)])) == ["Forecast: sunny in Rome"] * 2
    assert runs(effects) == ["Rome"]
    with open_store(shared_url) as store:
        assert [m["role"] for m in store.history("c1")] == ["user", "assistant", "tool", "assistant"]


# -- 5. a callback registered in the parent process only ------------------------------------------


def test_a_callback_registered_in_the_parent_misses_what_workers_do(tmp_path: Path) -> None:
    """Broken: a hook registered on the parent's agents fires locally, but never for requests workers handle."""
    effects = tmp_path / "effects"
    fired: list[str] = []
    assistant, user = stock_pair(weather_tool(effects))
    for agent in (assistant, user):
        agent.register_hook(
            "process_message_before_send",
            lambda sender, message, recipient, silent: fired.append(sender.name) or message,
        )
    user.initiate_chat(assistant, message="Weather in Rome?", silent=True)
    assert len(fired) == 4  # the callback works in this process
    fired.clear()
    job = {"prompt": "Weather in Oslo?", "effects": str(effects)}
    list(results([spawn("stock", **job), spawn("stock", **job)]))
    assert runs(effects) == ["Rome", "Oslo", "Oslo"]
    assert fired == []  # eight messages were sent in the workers; the callback saw none


def test_a_durable_subscriber_sees_every_message_once_in_a_third_process(shared_url: str, tmp_path: Path) -> None:
    """Fixed: the callback is a named subscriber run by a process that handled no request; it fires once per message."""
    effects, out = tmp_path / "effects", tmp_path / "notified"
    common = {"url": shared_url, "effects": str(effects)}
    requests = [
        spawn("ledger", conversation="c-a", prompt="Weather in Rome?", **common),
        spawn("ledger", conversation="c-b", prompt="Weather in Oslo?", **common),
    ]
    subscriber = spawn("subscriber", url=shared_url, out=str(out), expect=8)
    list(results(requests))
    assert list(results([subscriber])) == ["8"]
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and len({line.split()[-1] for line in lines}) == 8
    assert sorted(line.split()[0] for line in lines) == ["c-a"] * 4 + ["c-b"] * 4
    assert sorted(runs(effects)) == ["Oslo", "Rome"]
    assert list(results([spawn("subscriber", url=shared_url, out=str(out), expect=9, timeout=1)])) == ["8"]

"""A worker killed mid-tool (kill -9), then the request is retried by a new process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.backends.recorder import call_stream_id
from chatledger.store.messages import pending_tool_calls

from .helpers import effects

REPO = Path(__file__).resolve().parents[3]


def run_worker(url: str, request_id: str, prompt: str, lease: float, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start one request handler process."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.adapters.agentchat.worker", url, "c1", request_id, prompt, str(lease)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_claim(url: str, timeout: float = 20.0) -> str:
    """The id of the first tool call once a worker has claimed it."""
    store = open_store(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for _key, answer in _answers(store):
                calls = answer.get("content")
                if isinstance(calls, list) and calls:
                    call_id = calls[0]["id"]
                    events = store.stream_events(call_stream_id("c1", call_id))
                    if any(e.__class__.__name__ == "ToolCallClaimed" for e in events):
                        return str(call_id)
            time.sleep(0.05)
    finally:
        store.close()
    raise AssertionError("no worker claimed the tool call in time")


def _answers(store: object) -> list[tuple[str, dict[str, object]]]:
    from chatledger.store.responses import recorded_responses

    try:
        return recorded_responses(store, "c1")  # type: ignore[arg-type]
    except Exception:
        return []


@pytest.mark.slow
def test_a_worker_killed_mid_tool_is_recovered_by_the_retry(db_url: str) -> None:
    """kill -9 during an idempotent tool; the retried request takes the call over after the lease and runs it once."""
    env = {**os.environ, "CHATLEDGER_TEST_TOOL_SLEEP": "30", "PYTHONPATH": str(REPO)}
    victim = run_worker(db_url, "m1", "Charge 10", 1.0, env)
    try:
        call_id = wait_for_claim(db_url)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.wait(timeout=10)
    assert effects("charge_card") == 0
    env["CHATLEDGER_TEST_TOOL_SLEEP"] = "0"
    retry = run_worker(db_url, "m1", "Charge 10", 1.0, env)
    out, err = retry.communicate(timeout=60)
    assert retry.returncode == 0, err
    assert out.strip() == "Charged 10."
    assert effects("charge_card") == 1
    store = open_store(db_url)
    try:
        history = store.history("c1")
        assert pending_tool_calls(history) == []
        assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
        assert history[1]["tool_calls"][0]["id"] == call_id
    finally:
        store.close()

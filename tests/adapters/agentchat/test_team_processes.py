"""A team conversation resumed in a new process: request 1 in one process, request 2 in another.

Each request runs in ``tests/adapters/agentchat/team_worker.py`` with fresh agents, a fresh team
and fresh scripted model clients, on one SQLite file or one PostgreSQL schema; the
worker prints what its models were sent. A third process delivers request 2 again.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chatledger.store import open_store
from chatledger.store.messages import pending_tool_calls

from .helpers import effects
from .team_worker import long_lived

REPO = Path(__file__).resolve().parents[3]
PROMPTS = {"round_robin": ("Trip to Rome", "Book for 2"), "swarm": ("Weather please", "Book a table")}
SPEAKS_SECOND = {"round_robin": "booker", "swarm": "concierge"}


@pytest.fixture(params=["sqlite", "postgres"])
def team_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One database for every process of the test: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'team.db'}"
    return str(request.getfixturevalue("postgres_url"))


def run_request(url: str, kind: str, request_id: str, prompt: str) -> dict[str, Any]:
    """Handle one request in a new process; its JSON summary."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.adapters.agentchat.team_worker", url, kind, kind, request_id, prompt],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.splitlines()[-1]))


def chat_speakers(summary: dict[str, Any]) -> list[str]:
    """The sources of the run's chat messages (events left out), in order."""
    return [source for kind, source in summary["speakers"] if not kind.endswith("Event")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["round_robin", "swarm"])
def test_a_team_conversation_resumes_in_a_new_process_with_fresh_agents(kind: str, team_url: str) -> None:
    """Request 2 in a new process resumes the speaker order, sends the stock view, and each tool runs once."""
    first_prompt, second_prompt = PROMPTS[kind]
    first = run_request(team_url, kind, "m1", first_prompt)
    second = run_request(team_url, kind, "m2", second_prompt)
    speaker = SPEAKS_SECOND[kind]
    if kind == "round_robin":
        assert chat_speakers(first) == ["user", "weather"]
        assert chat_speakers(second) == ["user", "booker"]  # a fresh team left alone would start with weather
    else:
        assert chat_speakers(first) == ["user", "triage", "concierge", "concierge"]
        assert chat_speakers(second) == ["user", "concierge", "concierge"]  # the handoff target, not triage
    # Only the resumed speaker's model was called, and it was sent the stored history then the new prompt.
    calls = second["calls"]
    assert [name for name, sent in calls.items() if sent] == [speaker]
    assert calls[speaker][0][-1] == ["UserMessage", "user", second_prompt]
    assert ["UserMessage", "user", first_prompt] in calls[speaker][0]
    assert (effects("get_weather"), effects("book_table")) == (1, 1)

    store = open_store(team_url)
    try:
        history = store.history(kind)
        count = len(store.messages(kind))
        assert pending_tool_calls(history) == []
        calls_ids = [c["id"] for m in history for c in m.get("tool_calls") or []]
        results = [m["tool_call_id"] for m in history if m["role"] == "tool"]
        assert sorted(calls_ids) == sorted(results) and len(set(results)) == len(results)

        # Request 2 delivered again (a third process): nothing is sampled, run or stored again.
        again = run_request(team_url, kind, "m2", second_prompt)
        assert again["speakers"] == second["speakers"]
        assert all(sent == [] for sent in again["calls"].values())
        assert (effects("get_weather"), effects("book_table")) == (1, 1)
        assert len(store.messages(kind)) == count
    finally:
        store.close()

    # What the fresh process sent is what a stock team kept in memory across both requests sends.
    stock = asyncio.run(long_lived(kind, first_prompt, second_prompt))
    assert second["calls"] == stock["calls"]
    assert second["speakers"][1:] == stock["speakers"][1:]

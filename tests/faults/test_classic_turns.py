"""Classic AutoGen pairs in several processes on one conversation: the stored history stays provider-valid.

Real worker processes (``tests/adapters/classic/workers.py``) handle different requests on one
conversation at the same moment, on SQLite and PostgreSQL, against a scripted model that,
like a provider, refuses a history whose tool calls are not followed at once by their results.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.validity import provider_violations

from ..adapters.classic.fakes import model_calls, runs
from ..adapters.classic.test_classic_seeds import results, spawn

pytest.importorskip("autogen")

CITIES = ["Rome", "Oslo", "Lima"]


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL several processes can open."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_simultaneous_requests_in_processes_leave_a_history_the_provider_accepts(
    shared_url: str, tmp_path: Path
) -> None:
    """Different requests handled at once by separate processes store whole turns: the history obeys the
    provider rule, each tool call runs once, each request costs its own model calls, and the next request works."""
    common = {
        "url": shared_url,
        "conversation": "c1",
        "effects": str(tmp_path / "effects"),
        "calls": str(tmp_path / "calls"),
        "meet": [str(tmp_path / "meet"), len(CITIES), 0.5],
        "start_at": time.time() + 1.0,
    }
    procs = [spawn("ledger", prompt=f"Weather in {city}?", **common) for city in CITIES]
    assert list(results(procs)) == [f"Forecast: sunny in {city}" for city in CITIES]
    with open_store(shared_url) as store:
        stored = store.messages("c1")
    assert provider_violations(stored) == []
    assert sorted(runs(tmp_path / "effects")) == sorted(CITIES)
    assert sorted(m["tool_call_id"] for m in stored if m["role"] == "tool") == sorted(
        c["id"] for m in stored for c in m.get("tool_calls") or []
    )
    assert model_calls(tmp_path / "calls") == 2 * len(CITIES)
    common.pop("meet")
    assert list(results([spawn("ledger", prompt="And Paris?", **common)])) == ["Forecast: sunny in Paris"]
    with open_store(shared_url) as store:
        assert provider_violations(store.messages("c1")) == []


def test_a_worker_killed_mid_turn_stores_nothing_of_it_and_its_retry_runs_the_tool_once(
    shared_url: str, tmp_path: Path
) -> None:
    """A worker SIGKILLed after its tool ran, while waiting for the model, leaves no part of its turn in the
    conversation: another request goes on with a valid history, and the redelivered job answers with the
    recorded tool outcome (the tool does not run again)."""
    hung = tmp_path / "hung"
    common = {"url": shared_url, "conversation": "c1", "effects": str(tmp_path / "effects"), "lease_seconds": 2}
    victim = spawn("ledger", job="job-1", prompt="Weather in Rome?", hang_after_tool=str(hung), **common)
    deadline = time.monotonic() + 60
    while not hung.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hung.exists(), victim.communicate(timeout=5)[1][-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    assert runs(tmp_path / "effects") == ["Rome"]
    with open_store(shared_url) as store:
        assert store.messages("c1") == []
    other = spawn("ledger", job="job-2", prompt="Weather in Oslo?", **common)
    assert list(results([other])) == ["Forecast: sunny in Oslo"]
    retry = spawn("ledger", job="job-1", prompt="Weather in Rome?", **common)
    assert list(results([retry])) == ["Forecast: sunny in Rome"]
    assert runs(tmp_path / "effects") == ["Rome", "Oslo"]
    with open_store(shared_url) as store:
        stored = store.messages("c1")
    assert provider_violations(stored) == [] and len(stored) == 8


def test_duplicate_deliveries_in_processes_cost_one_request_of_model_calls(shared_url: str, tmp_path: Path) -> None:
    """Four worker processes handed the same job at once (same request id) all answer it, for one request's
    model calls (two) and one tool run; one turn is stored."""
    job = {
        "url": shared_url,
        "conversation": "c1",
        "job": "job-7",
        "prompt": "Weather in Rome?",
        "effects": str(tmp_path / "effects"),
        "calls": str(tmp_path / "calls"),
        "delay": 0.5,
        "start_at": time.time() + 1.5,
    }
    assert list(results([spawn("ledger", **job) for _ in range(4)])) == ["Forecast: sunny in Rome"] * 4
    assert model_calls(tmp_path / "calls") == 2
    assert runs(tmp_path / "effects") == ["Rome"]
    with open_store(shared_url) as store:
        assert [m["role"] for m in store.messages("c1")] == ["user", "assistant", "tool", "assistant"]

"""Real worker processes on one SQLite file: racing workers, kill -9 and recovery, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatledger.projections import tool_audit
from chatledger.store import Executor, Store, open_store, run_worker
from chatledger.store.tools.ledger import load_call

from . import toolbox
from .checks import assert_model_ready, assistant, call, successes
from .workers import start_worker, worker_env

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "chatledger.adapters.cli"]

pytestmark = pytest.mark.slow


def worker(url: str, counters: Path, *flags: str) -> subprocess.Popen[str]:
    """Start ``chatledger worker`` as a subprocess."""
    return start_worker(url, counters, "--poll", "0.05", *flags)


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_eight_processes_racing_on_200_calls_run_each_exactly_once(tmp_path: Path) -> None:
    """8 worker processes draining one queue of 200 calls run every tool exactly once and record one success."""
    url = f"sqlite:///{tmp_path / 'race.db'}"
    counters = tmp_path / "counters.db"
    store = open_store(url)
    submitter = Executor(store, toolbox.registry)
    convs = []
    for c in range(20):
        conv = store.start_conversation(f"conv-{c}", messages=[{"role": "user", "content": "count"}])
        submitter.submit(conv, assistant(*(call(f"call-{c}-{i}", "count", {"item": i}) for i in range(10))))
        convs.append(conv)
    procs = [worker(url, counters, "--idle-exit", "2", "--worker-id", f"w{n}") for n in range(8)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    counts = toolbox.read_counts(str(counters))
    assert len(counts) == 200
    assert set(counts.values()) == {1}
    assert len(successes(store)) == 200 and set(successes(store).values()) == {1}
    rows = tool_audit(store)
    assert {r.status for r in rows} == {"succeeded"} and len(rows) == 200
    assert len({r.worker_id for r in rows}) >= 2
    for conv in convs:
        history = store.history(conv)
        assert len(history) == 12
        assert_model_ready(history)
    store.close()


def start_crashing_worker(tmp_path: Path, tool_name: str) -> tuple[Store, str, Path]:
    """A worker process killed with SIGKILL in the middle of ``tool_name``; returns the store and call."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    counters = tmp_path / "counters.db"
    store = open_store(url)
    conv = store.start_conversation("conv", messages=[{"role": "user", "content": "go"}])
    Executor(store, toolbox.registry).submit(conv, assistant(call("c1", tool_name, {"seconds": 120})))
    proc = worker(url, counters, "--lease", "1", "--worker-id", "doomed")
    key = f"{conv}/c1"
    wait_for(lambda: toolbox.read_counts(str(counters)).get(key) == 1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_call(store, conv, "c1")
    assert state is not None and state.status == "claimed" and state.worker_id == "doomed"
    return store, conv, counters


def test_killed_worker_idempotent_tool_reruns_once_with_the_same_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After kill -9 mid-tool, an idempotent tool is re-run once, under the same idempotency key."""
    store, conv, counters = start_crashing_worker(tmp_path, "slow_idempotent")
    monkeypatch.setenv("CHATLEDGER_TEST_COUNTERS", str(counters))
    finished = run_worker(store, toolbox.registry, worker_id="rescuer", poll_seconds=0.05, idle_exit_seconds=3)
    assert finished == 1
    assert toolbox.read_counts(str(counters)) == {f"{conv}/c1": 2}
    state = load_call(store, conv, "c1")
    assert state is not None and state.status == "succeeded" and state.attempt == 2
    assert state.worker_id == "rescuer"
    assert store.history(conv)[-1] == {"role": "tool", "tool_call_id": "c1", "content": "done"}
    assert run_worker(store, toolbox.registry, poll_seconds=0.05, idle_exit_seconds=0.2) == 0
    assert toolbox.read_counts(str(counters)) == {f"{conv}/c1": 2}
    store.close()


def test_killed_worker_non_idempotent_tool_becomes_outcome_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After kill -9 mid-tool, a non-idempotent tool is marked outcome-unknown and never runs again."""
    store, conv, counters = start_crashing_worker(tmp_path, "slow_once")
    monkeypatch.setenv("CHATLEDGER_TEST_COUNTERS", str(counters))
    finished = run_worker(store, toolbox.registry, worker_id="rescuer", poll_seconds=0.05, idle_exit_seconds=3)
    assert finished == 1
    state = load_call(store, conv, "c1")
    assert state is not None and state.status == "outcome_unknown"
    assert toolbox.read_counts(str(counters)) == {f"{conv}/c1": 1}
    last = store.history(conv)[-1]
    assert last["tool_call_id"] == "c1" and "unknown" in last["content"]
    outcome = Executor(store, toolbox.registry).execute_call(conv, "c1", "slow_once", '{"seconds": 120}')
    assert outcome.from_record and outcome.status == "outcome_unknown"
    assert toolbox.read_counts(str(counters)) == {f"{conv}/c1": 1}
    store.close()


def test_cli_worker_and_audit_json(tmp_path: Path) -> None:
    """`chatledger worker --max-calls` stops after that many calls; `chatledger audit --json` lists them."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    counters = tmp_path / "counters.db"
    store = open_store(url)
    conv = store.start_conversation("conv-cli", messages=[{"role": "user", "content": "count"}])
    Executor(store, toolbox.registry).submit(
        conv, assistant(call("a", "count", {"item": 1}), call("b", "count", {"item": 2}), call("c", "nope", {}))
    )
    proc = worker(url, counters, "--max-calls", "2", "--worker-id", "cli-worker")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "finished 2 tool calls" in err
    env = worker_env(counters)
    out = subprocess.run(
        [*CLI, "--db", url, "audit", "--json"], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    rows = json.loads(out.stdout)
    assert len(rows) == 3
    done = [r for r in rows if r["status"] in {"succeeded", "failed"}]
    assert len(done) == 2 and {r["worker_id"] for r in done} == {"cli-worker"}
    one = subprocess.run(
        [*CLI, "--db", url, "audit", "--json", "--conversation", conv, "--status", "requested"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(one.stdout)) == 1
    table = subprocess.run(
        [*CLI, "--db", url, "audit", "--tool", "count"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert table.returncode == 0 and "TOOL_CALL_ID" in table.stdout and "count" in table.stdout
    bad = subprocess.run(
        [*CLI, "--db", url, "worker", "--tools", "no_such_module:x"], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "--tools" in bad.stderr
    store.close()

"""Tiny leases against one worker: lease renewal never costs a tool call its result."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatledger.store import Executor, open_store
from chatledger.store.tools.ledger import load_call

from ..store.tools import toolbox
from ..store.tools.checks import assert_model_ready, assistant, call, successes
from ..store.tools.workers import start_worker


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_one_worker_with_a_ten_millisecond_lease_runs_every_call_once(store_url: str, tmp_path: Path) -> None:
    """With no crash, a worker whose lease (10 ms) is renewed many times per call records every call's
    real result and runs each tool once, idempotent or not: renewal and outcome never conflict."""
    counters = tmp_path / "counters.db"
    store = open_store(store_url)
    calls: dict[str, list[str]] = {}
    for c in range(6):
        conv = store.start_conversation(f"race-{c}", messages=[{"role": "user", "content": "count"}])
        ids = [f"r{c}-{i}" for i in range(6)]
        tool = "brief_idempotent" if c % 2 else "brief"
        Executor(store, toolbox.registry).submit(
            conv, assistant(*(call(i, tool, {"item": n}) for n, i in enumerate(ids)))
        )
        calls[conv] = ids
    proc = start_worker(store_url, counters, "--lease", "0.01", "--poll", "0.02", "--idle-exit", "1")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    statuses = {i: load_call(store, conv, i).status for conv, ids in calls.items() for i in ids}  # type: ignore[union-attr]
    assert set(statuses.values()) == {"succeeded"}, statuses
    counts = toolbox.read_counts(str(counters))
    assert len(counts) == 36 and set(counts.values()) == {1}, counts
    assert set(successes(store).values()) == {1}
    for conv in calls:
        assert_model_ready(store.history(conv))
    store.close()

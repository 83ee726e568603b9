"""Two consumer processes on one subscription whose handler is slower than its lease."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.subscriptions import subscribe

from ..store.tools.workers import REPO, worker_env


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_handler_slower_than_the_lease_keeps_it_and_each_event_is_handled_once(
    store_url: str, tmp_path: Path
) -> None:
    """A subscription whose handler takes longer than its lease (0.8 s against 0.3 s) keeps the lease
    while the handler runs: with two consumer processes competing, every event is handled once, by
    one of them, and the subscription reaches the end of the log."""
    store = open_store(store_url)
    store.start_conversation(messages=[{"role": "user", "content": "one"}, {"role": "user", "content": "two"}])
    total = len(list(store.read_all()))
    log = tmp_path / "handled.log"
    command = [sys.executable, "-m", "tests.faults.consumer", store_url, str(log), str(total), "0.8", "0.3"]
    env = worker_env(tmp_path / "unused.db")
    procs = [subprocess.Popen(command, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
    handled = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert len(handled) == total and set(handled.values()) == {1}, handled
    state = subscribe(store, "slow", lambda event: None).state()
    assert state is not None and state.delivered == total and state.status == "active"
    store.close()

"""Closing a SQLite store, or its read models, while other threads of the process are reading and writing
through it (a web server's shutdown hook while request threads still run).

Each scenario runs in a child process (``tests/faults/closer.py``), so that a crash fails the test
instead of killing pytest: before each thread's connection was left to its own thread, closing one
that another thread was using crashed the process with a segmentation fault within a few rounds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..store.tools.workers import REPO, worker_env
from ..support.files import HAS_PROC

pytestmark = pytest.mark.skipif(not HAS_PROC, reason="open files are counted in /proc")
CLOSED = "is closed"


def _run(what: str, tmp_path: Path, rounds: int) -> dict[str, Any]:
    """Run the closer process; it must exit normally and print its summary."""
    folder = tmp_path / what
    folder.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "tests.faults.closer", what, str(folder), str(rounds)],
        env=worker_env(tmp_path / "unused.db"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"exit {proc.returncode} (a negative one is the signal that ended it): {proc.stderr}"
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


def test_closing_a_store_while_threads_use_it_ends_their_calls_with_backend_unavailable(tmp_path: Path) -> None:
    """A store closed 300 times while four threads append, read and write transactions through it never
    crashes the process: each call in flight finishes, every later one raises BackendUnavailable saying
    the store is closed, and once the threads have ended no file descriptor on the database is left open."""
    summary = _run("store", tmp_path, 300)
    outcomes = summary["outcomes"]
    assert set(outcomes) == {"ok", "BackendUnavailable"}, summary
    assert outcomes["BackendUnavailable"] == 4 * 300, summary
    assert all(CLOSED in message for message in summary["errors"]), summary
    assert summary["left_open"] == 0, summary


def test_closing_the_read_models_while_threads_query_and_project_never_crashes(tmp_path: Path) -> None:
    """The read models closed 300 times while threads search, list, read states and catch up never crash
    the process and fail no call: closing them only releases their connections, so a call in flight
    finishes on its connection and the next one opens a new one; once they are closed at the end, no
    file descriptor on the read-model file is left open."""
    summary = _run("views", tmp_path, 300)
    assert set(summary["outcomes"]) == {"ok"}, summary
    assert summary["left_open"] == 0, summary

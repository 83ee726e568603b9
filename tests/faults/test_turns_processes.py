"""Turn leases across real processes: duplicates run once, a SIGKILLed holder is taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from chatledger.store import open_store
from chatledger.store.turns import TurnClaimed, turn_stream_id

WORKER = Path(__file__).resolve().parent.parent / "store" / "turns" / "gate_worker.py"


def _url(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'chat.db'}"
    return str(request.getfixturevalue("postgres_url"))


def _spawn(url: str, conv: str, rid: str, lease: float, hold: float, ready: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), url, conv, rid, str(lease), str(hold), str(ready)],
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_duplicate_deliveries_in_processes_run_once(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Four processes delivering one request at once: one runs it, every process answers with its outcome."""
    url = _url(kind, tmp_path, request)
    store = open_store(url)
    conv = store.start_conversation()
    procs = [_spawn(url, conv, "req-1", 30, 0.3, tmp_path / f"ready-{i}") for i in range(4)]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    ran = [o["ran"] for o in outs if "ran" in o]
    assert len(ran) == 1
    assert all(o.get("recorded", o.get("ran")) == ran[0] for o in outs)
    assert [m["content"] for m in store.messages(conv)] == ["effect of req-1"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_sigkilled_holder_is_taken_over_after_its_lease(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A holder killed mid-turn blocks its retry and other requests only until its lease expires."""
    url = _url(kind, tmp_path, request)
    store = open_store(url)
    conv = store.start_conversation()
    ready = tmp_path / "ready-a"
    victim = _spawn(url, conv, "req-1", 1.0, 600, ready)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline, "the first delivery never got its turn"
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(30)
    retry = _spawn(url, conv, "req-1", 1.0, 0, tmp_path / "ready-b")
    other = _spawn(url, conv, "req-2", 1.0, 0, tmp_path / "ready-c")
    out_retry = json.loads(retry.communicate(timeout=120)[0])
    out_other = json.loads(other.communicate(timeout=120)[0])
    assert "ran" in out_retry and "ran" in out_other
    claims = [e for e in store.stream_events(turn_stream_id(conv)) if isinstance(e, TurnClaimed)]
    assert claims[0].request_id == "req-1"
    assert claims[1].takeover_of == "req-1"
    assert [c.request_id for c in claims[1:]] in (["req-1", "req-2"], ["req-2", "req-1"])

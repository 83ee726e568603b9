"""An eventsourcing application's notification log on chatledger, followed while several processes write.

Fault: four writer processes save aggregates at once (one insert each) while the test follows the
notification log with ``select_notifications(start=last, inclusive_of_start=False)``, as eventsourcing's
followers and projection runners do; one writer is killed with SIGKILL halfway.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.application import Application

REPO = Path(__file__).resolve().parents[2]
MAIN = "from tests.adapters.eventsourcing.shared_writer import main; main()"
MODULE = "chatledger.adapters.eventsourcing"
WRITERS, EACH = 4, 120


def _follow_while_writing(url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    app = Application[UUID](env={"PERSISTENCE_MODULE": MODULE, "CHATLEDGER_URL": url})
    app.save()  # the store exists before the writers open it
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MAIN, "aggregates", url, str(EACH)],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for _ in range(WRITERS)
    ]
    seen: list[int] = []
    last, killed = 0, False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [p for p in procs if p.poll() is None]
        page = app.recorder.select_notifications(start=last, limit=50, inclusive_of_start=False)
        seen += [n.id for n in page]
        if page:
            last = page[-1].id
        if not killed and len(seen) >= WRITERS * EACH // 2:
            procs[0].send_signal(signal.SIGKILL)
            killed = True
        if not running and not page:
            break
    for proc in procs[1:]:
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    final = [n.id for n in app.recorder.select_notifications(start=None, limit=10 * WRITERS * EACH)]
    app.close()
    assert killed
    assert seen == sorted(set(seen)), "a notification id appeared lower than one already read, or twice"
    assert seen == final, f"the follower missed {len(set(final) - set(seen))} of {len(final)} notifications"
    assert len(final) >= (WRITERS - 1) * EACH


def test_sqlite_followers_miss_no_notification(tmp_path: Path) -> None:
    """A follower of the notification log reads every event once, ids only increasing, while four
    processes write to one SQLite file and one of them is killed."""
    _follow_while_writing(f"sqlite:///{tmp_path / 'order.db'}")


@pytest.mark.postgres
def test_postgres_followers_miss_no_notification(postgres_url: str) -> None:
    """The same holds for four processes writing to one PostgreSQL database."""
    _follow_while_writing(postgres_url)

"""An eventsourcing application and chatledger conversations in one store, written by separate processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from eventsourcing.application import Application

from chatledger.adapters.eventsourcing import ChatledgerApplicationRecorder
from chatledger.store import DomainEventRecorded, open_store
from tests.adapters.eventsourcing.shared_writer import Counter, Counters

REPO = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "chatledger.adapters.cli"]
MODULE = "chatledger.adapters.eventsourcing"
_MAIN = "from tests.adapters.eventsourcing.shared_writer import main; main()"


def _write_concurrently(url: str, count: int) -> tuple[list[str], str]:
    """Run the application's process and the conversation's process at the same time."""
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MAIN, kind, url, str(count)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in ("es", "chat")
    ]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(json.loads(out))
    return outs[0], outs[1][0]


def _check_shared(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ids, conv = _write_concurrently(url, 12)
    store = open_store(url)
    try:
        report = store.verify()
        assert report.ok, report.problems
        # 12 counters of 4 events, 6 snapshots, 1 conversation of 25 events: every chain was checked.
        assert report.events == 12 * 4 + 6 + 25
        assert [c.conversation_id for c in store.conversations()] == [conv]
        assert len(store.history(conv)) == 24
        subscribed = [e for e in store.read_all() if isinstance(e, DomainEventRecorded)]
        assert len(subscribed) == 12 * 4 + 6

        monkeypatch.setenv("PERSISTENCE_MODULE", MODULE)
        monkeypatch.setenv("CHATLEDGER_URL", url)
        app = Counters()
        try:
            for oid in ids:
                counter = app.repository.get(UUID(oid))
                assert isinstance(counter, Counter)
                assert (counter.value, counter.version) == (6, 4)
            recorder = app.recorder
            assert isinstance(recorder, ChatledgerApplicationRecorder)
            notifications = recorder.select_notifications(None, 1000)
            assert len(notifications) == 12 * 4
            assert [n.id for n in notifications] == sorted({n.id for n in notifications})
            assert recorder.max_notification_id() == notifications[-1].id
        finally:
            app.close()
        other = Application[UUID](env={"PERSISTENCE_MODULE": MODULE, "CHATLEDGER_URL": url})
        try:
            assert other.recorder.select_notifications(None, 10) == []  # another application's log is its own
        finally:
            other.close()
    finally:
        store.close()


def test_sqlite_file_shared_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An application's events and a conversation written at once by two processes to one SQLite file all
    verify; the application reads back its aggregates and only its own notifications, and the store lists
    only the conversation."""
    _check_shared(f"sqlite:///{tmp_path / 'shared.db'}", monkeypatch)


@pytest.mark.postgres
def test_postgres_database_shared_across_processes(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same holds for one PostgreSQL database written by two processes at once."""
    _check_shared(postgres_url, monkeypatch)


def test_cli_never_takes_application_streams_for_conversations(tmp_path: Path) -> None:
    """The CLI's listing, export, search, rebuild and verify pass over an application's streams, and verify
    checks their chains."""
    db = tmp_path / "cli.db"
    url = f"sqlite:///{db}"
    ids, conv = _write_concurrently(url, 3)
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}

    def cli(*args: str) -> str:
        done = subprocess.run([*CLI, "--db", url, *args], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert cli("rebuild")
    listed = cli("conversations", "--json")
    assert conv in listed and not any(oid in listed for oid in ids)
    exported = [json.loads(line) for line in cli("export").splitlines() if line.strip()]
    assert [e["id"] for e in exported] == [conv]
    assert "eventsourcing" not in cli("search", "ledgers")
    verified = json.loads(cli("verify", "--json"))
    assert verified["ok"] and verified["events"] == 3 * 4 + 2 + 7

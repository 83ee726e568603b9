"""Crash-restarts of the PostgreSQL server under writers: no acknowledged append is lost.

Writer processes append through repeated ``pg_ctl -m immediate`` restarts of a private
server, half of them as lone appends (one autocommit statement) and half inside
``store.transaction()``. When a commit's reply is lost, the store settles the outcome; the
server reissues transaction ids that never reached durable WAL after crash recovery, so the
settling must look up what the write stored, never ask for a transaction id's status.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import psycopg

from chatledger.store import BackendUnavailable, ChatledgerError, MessageAppended, open_store
from chatledger.store.handle import Draft

from ..conftest import with_search_path
from ..store.backends.postgres.helpers import PrivateServer

WRITERS = 4
RESTARTS = 10


def lost_commit_writer(url: str, worker: int, log: str, stop: Any) -> None:
    """Append unique message ids until ``stop`` is set; one line per attempt with its outcome."""
    conv = f"w{worker}"
    store = None
    created = False
    with open(log, "a", encoding="utf-8") as out:
        i = 0
        while not stop.is_set():
            try:
                if store is None:
                    store = open_store(url, pool_min=1, pool_max=2, timeout=3, read_wait=1)
                if not created:  # until the conversation is known to exist: a restart may refuse its creation
                    if store.recorder.get_head(conv) is None:
                        store.start_conversation(conv)
                    created = True
            except ChatledgerError:
                time.sleep(0.05)
                continue
            mid = f"{conv}-{i}"
            i += 1
            try:
                if i % 2:
                    store.append(conv, [{"role": "user", "content": mid}], message_ids=[mid])
                else:
                    with store.transaction() as w:
                        payload = {"message_id": mid, "message": {"role": "user", "content": mid}}
                        w.append(conv, [Draft(MessageAppended, payload, key=mid)])
                outcome = "acked"
            except BackendUnavailable as exc:
                outcome = "refused" if "nothing was written" in str(exc) else "unknown"
            except ChatledgerError as exc:
                outcome = f"error {type(exc).__name__}: {exc}"
            out.write(json.dumps([mid, outcome]) + "\n")
            out.flush()
    if store is not None:
        store.close()


def _attempts(logs: list[Path]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in logs:
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                mid, outcome = json.loads(line)
                found[mid] = outcome
    return found


def test_acknowledged_appends_survive_repeated_crash_restarts(tmp_path: Path) -> None:
    """Every append the store acknowledged through ten immediate restarts is stored exactly once,
    none it reported as not written is stored, and the log verifies (hashes cover positions)."""
    server = PrivateServer()
    try:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE SCHEMA chat")
        url = with_search_path(server.url, "chat")
        open_store(url).close()
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        logs = [tmp_path / f"w{n}.jsonl" for n in range(WRITERS)]
        procs = [ctx.Process(target=lost_commit_writer, args=(url, n, str(logs[n]), stop)) for n in range(WRITERS)]
        for p in procs:
            p.start()
        try:
            for _ in range(RESTARTS):
                before = len(_attempts(logs))
                deadline = time.monotonic() + 30
                while len(_attempts(logs)) < before + 150 and time.monotonic() < deadline:
                    time.sleep(0.05)
                server.stop("immediate")
                server.start()
            before = len(_attempts(logs))
            deadline = time.monotonic() + 30
            while len(_attempts(logs)) < before + 100 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            for p in procs:
                p.join(60)
        attempts = _attempts(logs)
        assert not [a for a in attempts.items() if a[1].startswith("error")]
        store = open_store(url)
        stored: list[str] = []
        for n in range(WRITERS):
            stored += [m["content"] for m in store.messages(f"w{n}")]
        # Appends settled after a lost reply were hashed with the position they landed at: the log verifies.
        report = store.verify()
        assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems[:3]]
        store.close()
        assert len(stored) == len(set(stored)), "an append is stored twice"
        acked = {mid for mid, outcome in attempts.items() if outcome == "acked"}
        refused = {mid for mid, outcome in attempts.items() if outcome == "refused"}
        assert len(acked) > RESTARTS * 100
        assert sorted(acked - set(stored)) == [], "acknowledged appends were lost"
        assert sorted(refused & set(stored)) == [], "appends reported as not written were stored"
        assert set(stored) <= set(attempts)
    finally:
        server.close()

"""Several OS processes appending to one SQLite file lose nothing and duplicate nothing."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from chatledger.store import ConcurrencyError, open_store


def _appender(url: str, shared: str, worker: int, count: int) -> None:
    store = open_store(url)
    own = store.start_conversation(f"own-{worker}")
    for i in range(count):
        store.append(own, [{"role": "user", "content": f"{worker}:{i}"}])
        while True:
            try:
                store.append(
                    shared,
                    [{"role": "user", "content": f"{worker}:{i}"}],
                    expected_version=store.version(shared),
                    message_ids=[f"{worker}:{i}"],
                )
                break
            except ConcurrencyError:
                continue
    store.close()


def test_processes_appending_to_one_file(tmp_path: Path) -> None:
    """Four processes append to their own and to one shared conversation; every message is stored once,
    positions run without a gap, and the log verifies."""
    url = f"sqlite:///{tmp_path / 'multi.db'}"
    store = open_store(url)
    shared = store.start_conversation("shared")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(url, shared, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    expected = sorted(f"{w}:{i}" for w in range(4) for i in range(40))
    assert sorted(m["content"] for m in store.history(shared)) == expected
    for w in range(4):
        assert [m["content"] for m in store.history(f"own-{w}")] == [f"{w}:{i}" for i in range(40)]
    positions = [e.position for e in store.read_all()]
    assert positions == sorted(positions) and len(set(positions)) == 1 + 4 + 4 * 40 * 2
    # Guessed positions that another process had taken were refused, never skipped or reused: the
    # positions run without a gap and every hash covers its own.
    assert positions == list(range(1, len(positions) + 1))
    report = store.verify()
    assert report.ok and report.unpositioned == 0, [p.describe() for p in report.problems[:3]]
    store.close()


def _open_and_append(url: str, start_at: float, n: int) -> None:
    import time

    time.sleep(max(0.0, start_at - time.time()))
    store = open_store(url)
    store.start_conversation(f"opener-{n}", messages=[{"role": "user", "content": str(n)}])
    store.close()


def test_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """Several processes creating the same new database file at the same moment all open it and write."""
    import time

    for attempt in range(3):
        url = f"sqlite:///{tmp_path / f'fresh-{attempt}.db'}"
        ctx = mp.get_context("spawn")
        start_at = time.time() + 1.5
        procs = [ctx.Process(target=_open_and_append, args=(url, start_at, n)) for n in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        store = open_store(url)
        assert len(store.conversations()) == 6
        store.close()

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
    """Four processes append to their own and to one shared conversation; every message is stored once."""
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
    store.close()

"""Append and history-load cost of the SQLite store beside raw sqlite3 doing the same work.

Run: python bench/append.py [--appends 1000] [--dir DIR]

For each synchronous mode (FULL, NORMAL) it measures, in one run and on the same
file system:
- single-message durable appends (one transaction each) to a conversation that
  already holds 0, 1,000 and 10,000 events, against raw sqlite3 doing
  BEGIN + INSERT + COMMIT of the same JSON into a (conversation_id, version) table:
  latency (median) and throughput (appends over their total time, WAL checkpoints
  included). Store and raw appends alternate one by one, after a warm-up of both
  on other conversations;
- loading the history of 1,000- and 5,000-message conversations, against raw
  SELECT + json.loads of the same rows;
- database size per 1,000 messages, against the raw table.
Ratios (the store's cost ÷ raw's) are what to read: absolute numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chatledger.store import open_store

MESSAGE = {"role": "user", "content": "Please check the weather in Rome and book a table for two at eight. " * 2}


def raw_setup(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (conversation_id TEXT NOT NULL, version INTEGER NOT NULL, "
        "payload TEXT NOT NULL, PRIMARY KEY (conversation_id, version))"
    )
    return conn


def raw_fill(conn: sqlite3.Connection, conv: str, n: int) -> None:
    text = json.dumps(MESSAGE)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO messages VALUES (?, ?, ?)", ((conv, v, text) for v in range(1, n + 1)))
    conn.execute("COMMIT")


def raw_append(conn: sqlite3.Connection, conv: str, version: int) -> float:
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.execute("INSERT INTO messages VALUES (?, ?, ?)", (conv, version, json.dumps(MESSAGE)))
    conn.execute("COMMIT")
    return time.perf_counter() - t0


def raw_appends(conn: sqlite3.Connection, conv: str, start: int, count: int) -> list[float]:
    return [raw_append(conn, conv, v) for v in range(start + 1, start + count + 1)]


def raw_load(conn: sqlite3.Connection, conv: str) -> float:
    t0 = time.perf_counter()
    rows = conn.execute("SELECT payload FROM messages WHERE conversation_id = ? ORDER BY version", (conv,)).fetchall()
    msgs = [json.loads(r[0]) for r in rows]
    assert msgs
    return time.perf_counter() - t0


def store_fill(store, conv: str, n: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(0, n, 1000):
        store.append(conv, [MESSAGE] * min(1000, n - start))


def store_append(store, conv: str) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    store.append(conv, [MESSAGE])
    return time.perf_counter() - t0


def store_appends(store, conv: str, count: int) -> list[float]:  # type: ignore[no-untyped-def]
    return [store_append(store, conv) for _ in range(count)]


def appends(
    store, raw: sqlite3.Connection, length: int, count: int, label: str = ""
) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """``count`` single-message appends each to a store and a raw conversation of ``length`` prior messages.

    Store and raw appends alternate one by one, so that a burst of machine noise or a
    WAL checkpoint falls on both alike.
    """
    conv = store.start_conversation()
    store_fill(store, conv, length)
    raw_conv = f"raw-{label}{length}"
    raw_fill(raw, raw_conv, length)
    s_times: list[float] = []
    r_times: list[float] = []
    for v in range(length + 1, length + count + 1):
        s_times.append(store_append(store, conv))
        r_times.append(raw_append(raw, raw_conv, v))
    return s_times, r_times


def file_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    return path.stat().st_size


def run(sync: str, count: int, tmp: Path) -> list[tuple[str, float, float]]:
    rows: list[tuple[str, float, float]] = []
    store = open_store(f"sqlite:///{tmp / f'store-{sync}.db'}", synchronous=sync)
    raw = raw_setup(tmp / f"raw-{sync}.db", sync)
    # Warm up both (code paths, statement caches, the files' first pages) on conversations not measured.
    appends(store, raw, 0, 50, "warm-up-")
    for length in (0, 1_000, 10_000):
        s_times, r_times = appends(store, raw, length, count)
        name = f"append, {length:>6} prior events"
        rows.append(
            (f"{name}: latency, median (ms)", statistics.median(s_times) * 1e3, statistics.median(r_times) * 1e3)
        )
        rows.append((f"{name}: throughput (appends/s)", len(s_times) / sum(s_times), len(r_times) / sum(r_times)))
    for n in (1_000, 5_000):
        conv = store.start_conversation()
        store_fill(store, conv, n)
        raw_conv = f"load-{n}"
        raw_fill(raw, raw_conv, n)
        # Alternate store and raw loads so that a burst of machine noise hits both; keep each one's best.
        s_best, r_best = float("inf"), float("inf")
        for _ in range(9):
            s_best = min(s_best, _timed(lambda c=conv: store.history(c)))
            r_best = min(r_best, raw_load(raw, raw_conv))
        rows.append((f"history load, {n} messages (ms)", s_best * 1e3, r_best * 1e3))
    store.close()
    raw.close()
    # Size: 1,000 messages in fresh files.
    sp, rp = tmp / f"size-store-{sync}.db", tmp / f"size-raw-{sync}.db"
    s2 = open_store(f"sqlite:///{sp}", synchronous=sync)
    conv = s2.start_conversation()
    store_appends(s2, conv, 1000)
    s2.close()
    r2 = raw_setup(rp, sync)
    raw_appends(r2, "size", 0, 1000)
    r2.close()
    rows.append(("size per 1,000 messages (KB)", file_size(sp) / 1024, file_size(rp) / 1024))
    return rows


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appends", type=int, default=1000, help="appends per measurement (default 1000)")
    parser.add_argument("--dir", default=None, help="where to put the database files (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus")
        print("| synchronous | measure | chatledger | raw sqlite3 | ratio |")
        print("|---|---|---:|---:|---:|")
        for sync in ("FULL", "NORMAL"):
            for name, s, r in run(sync, args.appends, Path(d)):
                # A ratio of costs: for throughput, raw's rate over the store's.
                ratio = r / s if "throughput" in name else s / r
                print(f"| {sync} | {name} | {s:.3f} | {r:.3f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

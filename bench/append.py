"""Append and history-load cost of the SQLite store beside raw sqlite3 doing the same work.

Run: python bench/append.py [--appends 1000] [--dir DIR]

For each synchronous mode (FULL, NORMAL) it measures, in one run and on the same
file system, three writers of the same chat message:
- chatledger: ``Store.append(conv, [message])`` (validation, idempotency, hash
  chain, the typed event returned);
- eventsourcing's SQLite application recorder inserting one ``StoredEvent`` per
  append (the bare engine: no validation, no chain, no event object), as a
  reference for what an event store's recorder costs on its own;
- raw sqlite3 doing BEGIN + INSERT + COMMIT of the same JSON into a
  (conversation_id, version, payload) table.
What is measured:
- single-message durable appends (one transaction each) to a conversation that
  already holds 0, 1,000 and 10,000 events: latency (median) and throughput
  (appends over their total time, WAL checkpoints included). chatledger's appends
  take turns one by one with raw's, then the recorder's with raw's, after a
  warm-up of all on other conversations;
- loading the history of 1,000- and 5,000-message conversations (raw: SELECT +
  json.loads of the same rows);
- database size per 1,000 messages.
Ratios (a writer's cost ÷ raw's, each against the raw appends measured in turns with it)
are what to read: absolute numbers vary with the machine. The recorder's column is its
ratio only.
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
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteConnection, SQLiteDatastore

from chatledger.store import open_store

MESSAGE = {"role": "user", "content": "Please check the weather in Rome and book a table for two at eight. " * 2}
TOPIC = "chat.message"
Row = tuple[str, float, float, float]  # measure, chatledger, raw, the recorder's ratio to raw


# -- raw sqlite3 ---------------------------------------------------------------------------------


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


def raw_load(conn: sqlite3.Connection, conv: str) -> float:
    t0 = time.perf_counter()
    rows = conn.execute("SELECT payload FROM messages WHERE conversation_id = ? ORDER BY version", (conv,)).fetchall()
    msgs = [json.loads(r[0]) for r in rows]
    assert msgs
    return time.perf_counter() - t0


# -- eventsourcing's recorder --------------------------------------------------------------------


def es_setup(path: Path, sync: str) -> SQLiteApplicationRecorder:
    """eventsourcing's SQLite application recorder on its own file, with the same ``synchronous``."""
    datastore = SQLiteDatastore(str(path))
    pool: Any = datastore.pool
    make: Callable[[], SQLiteConnection] = pool._create_connection

    def tuned() -> SQLiteConnection:  # eventsourcing opens its connections lazily, in WAL mode
        conn = make()
        conn._sqlite_conn.execute(f"PRAGMA synchronous={sync}")
        return conn

    pool._create_connection = tuned
    recorder = SQLiteApplicationRecorder(datastore)
    recorder.create_table()
    return recorder


def es_fill(recorder: SQLiteApplicationRecorder, oid: uuid.UUID, n: int) -> None:
    state = json.dumps(MESSAGE).encode()
    for start in range(0, n, 1000):
        recorder.insert_events([StoredEvent(oid, v, TOPIC, state) for v in range(start + 1, min(start + 1000, n) + 1)])


def es_append(recorder: SQLiteApplicationRecorder, oid: uuid.UUID, version: int) -> float:
    t0 = time.perf_counter()
    recorder.insert_events([StoredEvent(oid, version, TOPIC, json.dumps(MESSAGE).encode())])
    return time.perf_counter() - t0


def es_load(recorder: SQLiteApplicationRecorder, oid: uuid.UUID) -> float:
    t0 = time.perf_counter()
    msgs = [json.loads(e.state) for e in recorder.select_events(oid)]
    assert msgs
    return time.perf_counter() - t0


# -- chatledger ----------------------------------------------------------------------------------


def store_fill(store: Any, conv: str, n: int) -> None:
    for start in range(0, n, 1000):
        store.append(conv, [MESSAGE] * min(1000, n - start))


def store_append(store: Any, conv: str) -> float:
    t0 = time.perf_counter()
    store.append(conv, [MESSAGE])
    return time.perf_counter() - t0


# -- the measurements ----------------------------------------------------------------------------


def appends(
    writer: Callable[[int], float], raw: sqlite3.Connection, length: int, count: int, label: str
) -> tuple[list[float], list[float]]:
    """``count`` single-message appends by ``writer`` (given the version) and by raw sqlite3, taking turns.

    Both write to a conversation of ``length`` prior messages (the caller filled the
    writer's). Turn by turn, a burst of machine noise or a WAL checkpoint falls on
    both alike, and each append starts on caches the other's commit left cold.
    """
    raw_conv = f"raw-{label}{length}"
    raw_fill(raw, raw_conv, length)
    w_times: list[float] = []
    r_times: list[float] = []
    for v in range(length + 1, length + count + 1):
        w_times.append(writer(v))
        r_times.append(raw_append(raw, raw_conv, v))
    return w_times, r_times


def store_writer(store: Any, length: int) -> Callable[[int], float]:
    conv = store.start_conversation()
    store_fill(store, conv, length)
    return lambda _version: store_append(store, conv)


def es_writer(es: SQLiteApplicationRecorder, length: int) -> Callable[[int], float]:
    oid = uuid.uuid4()
    es_fill(es, oid, length)
    return lambda version: es_append(es, oid, version)


def file_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    return path.stat().st_size


def run(sync: str, count: int, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    store = open_store(f"sqlite:///{tmp / f'store-{sync}.db'}", synchronous=sync)
    es = es_setup(tmp / f"es-{sync}.db", sync)
    raw = raw_setup(tmp / f"raw-{sync}.db", sync)
    # Warm up all (code paths, statement caches, the files' first pages) on conversations not measured.
    appends(store_writer(store, 0), raw, 0, 50, "warm-up-store-")
    appends(es_writer(es, 0), raw, 0, 50, "warm-up-es-")
    for length in (0, 1_000, 10_000):
        # chatledger and the recorder are each measured in turns with raw sqlite3, one after the other.
        s_times, r_times = appends(store_writer(store, length), raw, length, count, "store-")
        e_times, q_times = appends(es_writer(es, length), raw, length, count, "es-")
        name = f"append, {length:>6} prior events"
        latency = statistics.median
        rows.append(
            (
                f"{name}: latency, median (ms)",
                latency(s_times) * 1e3,
                latency(r_times) * 1e3,
                latency(e_times) / latency(q_times),
            )
        )
        rows.append(
            (f"{name}: throughput (appends/s)", _rate(s_times), _rate(r_times), _rate(q_times) / _rate(e_times))
        )
    for n in (1_000, 5_000):
        conv = store.start_conversation()
        store_fill(store, conv, n)
        oid = uuid.uuid4()
        es_fill(es, oid, n)
        raw_conv = f"load-{n}"
        raw_fill(raw, raw_conv, n)
        # Alternate the loads so that a burst of machine noise hits all; keep each one's best.
        s_best = e_best = r_best = float("inf")
        for _ in range(9):
            s_best = min(s_best, _timed(lambda c=conv: store.history(c)))
            e_best = min(e_best, es_load(es, oid))
            r_best = min(r_best, raw_load(raw, raw_conv))
        rows.append((f"history load, {n} messages (ms)", s_best * 1e3, r_best * 1e3, e_best / r_best))
    store.close()
    es.datastore.close()
    raw.close()
    # Size: 1,000 single-message appends in fresh files.
    sp, ep, rp = tmp / f"size-store-{sync}.db", tmp / f"size-es-{sync}.db", tmp / f"size-raw-{sync}.db"
    s2 = open_store(f"sqlite:///{sp}", synchronous=sync)
    conv = s2.start_conversation()
    e2 = es_setup(ep, sync)
    oid = uuid.uuid4()
    r2 = raw_setup(rp, sync)
    for v in range(1, 1001):
        store_append(s2, conv)
        es_append(e2, oid, v)
        raw_append(r2, "size", v)
    s2.close()
    e2.datastore.close()
    r2.close()
    raw_size = file_size(rp)
    rows.append(("size per 1,000 messages (KB)", file_size(sp) / 1024, raw_size / 1024, file_size(ep) / raw_size))
    return rows


def _rate(times: list[float]) -> float:
    return len(times) / sum(times)


def _timed(fn: Callable[[], object]) -> float:
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
        print("| synchronous | measure | chatledger | raw sqlite3 | ratio | eventsourcing recorder: ratio |")
        print("|---|---|---:|---:|---:|---:|")
        for sync in ("FULL", "NORMAL"):
            for name, s, r, e_ratio in run(sync, args.appends, Path(d)):
                # A ratio of costs: for throughput, raw's rate over the store's.
                ratio = r / s if "throughput" in name else s / r
                print(f"| {sync} | {name} | {s:.3f} | {r:.3f} | {ratio:.2f}x | {e_ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

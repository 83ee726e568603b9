"""Single-event append throughput of the PostgreSQL store beside raw psycopg doing the same inserts.

Run: python bench/postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--seconds 6]

For 1 and 8 concurrent writer processes, each appending one message at a time
to its own conversation, it measures in one run, on the same server:
- chatledger: ``Store.append`` (message validation, hash chain, and one durable
  autocommit statement that moves the head only if it is the one hashed against,
  inserts the event and lets the unique (stream_id, key) index refuse a stored id;
  see docs/postgres.md, "Lone appends");
- raw psycopg: one autocommit ``INSERT`` per event of the same row into a copy
  of the events table (same columns, defaults, keys and indexes), with none of
  the checks: no head lock, no idempotency lookup, no hash chain.
It prints appends/s, the median latency and the ratio chatledger ÷ raw. Every
run uses a fresh schema, dropped at the end. Ratios are what to read: absolute
numbers vary with the machine and with whatever else the server is doing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg

MESSAGE = {"role": "user", "content": "Please check the weather in Rome and book a table for two at eight. " * 2}


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def chatledger_writer(url: str, seconds: float, barrier: Any, out: Any) -> None:
    from chatledger.store import open_store

    store = open_store(url, pool_min=1, pool_max=1)
    conv = store.start_conversation()
    store.append(conv, [MESSAGE])  # warm the connection and prepared statements
    barrier.wait()
    times = []
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        store.append(conv, [MESSAGE])
        times.append(time.perf_counter() - t0)
    store.close()
    out.put(times)


def raw_writer(url: str, seconds: float, barrier: Any, out: Any) -> None:
    conv = uuid.uuid4().hex
    text = json.dumps({"message_id": "m", "message": MESSAGE})
    sql = (
        "INSERT INTO raw_events (stream_id, version, conversation_id, tenant, event_id, type, "
        "schema_version, key, recorded_at, payload, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql, (conv, 0, conv, "default", uuid.uuid4().hex, "MessageAppended", 1, "k0", "t", text, "h"))
        barrier.wait()
        times = []
        version = 0
        end = time.perf_counter() + seconds
        while (t0 := time.perf_counter()) < end:
            version += 1
            event_id = uuid.uuid4().hex
            row = (conv, version, conv, "default", event_id, "MessageAppended", 1, event_id, "t", text, "h" * 64)
            conn.execute(sql, row)
            times.append(time.perf_counter() - t0)
    out.put(times)


def run(kind: str, url: str, writers: int, seconds: float) -> tuple[float, float]:
    """Appends per second and median latency (ms) of ``writers`` processes of one kind."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    out = ctx.Queue()
    target = chatledger_writer if kind == "chatledger" else raw_writer
    procs = [ctx.Process(target=target, args=(url, seconds, barrier, out)) for _ in range(writers)]
    for p in procs:
        p.start()
    barrier.wait()
    started = time.perf_counter()
    results = [out.get(timeout=seconds + 120) for _ in procs]
    elapsed = max(time.perf_counter() - started, seconds)
    for p in procs:
        p.join()
    times = [t for r in results for t in r]
    return len(times) / elapsed, statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("CHATLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per cell")
    parser.add_argument("--writers", default="1,8", help="comma-separated writer process counts")
    args = parser.parse_args()
    schema = f"cl_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = _with_schema(args.url, schema)
    try:
        from chatledger.store import open_store

        open_store(url).close()  # create the schema before the writers race to
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        rows = []
        for writers in (int(w) for w in args.writers.split(",")):
            ours, ours_ms = run("chatledger", url, writers, args.seconds)
            raw, raw_ms = run("raw", url, writers, args.seconds)
            rows.append((writers, ours, ours_ms, raw, raw_ms, ours / raw))
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"PostgreSQL single-event appends, {args.seconds:g} s per cell, {os.cpu_count()} CPUs")
    print()
    print("| writers | chatledger appends/s | p50 ms | raw psycopg inserts/s | p50 ms | ratio |")
    print("|---:|---:|---:|---:|---:|---:|")
    for writers, ours, ours_ms, raw, raw_ms, ratio in rows:
        print(f"| {writers} | {ours:,.0f} | {ours_ms:.2f} | {raw:,.0f} | {raw_ms:.2f} | {ratio:.0%} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

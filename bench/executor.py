"""Tool-call throughput of the executor on one SQLite file, beside the raw commits it needs.

Run: python bench/executor.py [--calls 2000] [--workers 1,2,4,8] [--synchronous FULL]

For each worker count it queues ``--calls`` trivial tool calls (10 per assistant
message, via ``Executor.submit``), starts that many worker processes
(``run_worker``) behind a barrier, and reports from the recorded events:
- calls/s while draining the queue (first claim to last result);
- p50/p99 claim-to-result latency;
- duplicates: tool runs beyond one per call, and succeeded events beyond one per call (must be 0).
It also measures the inline path (``Executor.execute_call`` in one process:
request+claim in one transaction, result in a second) and, in the same run and
with the same pragmas, the cost of one raw ``INSERT`` + ``COMMIT`` in sqlite3.
"per call / raw" is a tool call's time on one worker (submit share + claim +
result) divided by that raw commit time; the target is <= 3.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chatledger.store import (
    Executor,
    ToolCallClaimed,
    ToolCallSucceeded,
    current_idempotency_key,
    open_store,
    run_worker,
)

PER_MESSAGE = 10


def raw_commit_seconds(path: Path, sync: str, count: int = 500) -> float:
    """Mean time of one INSERT + COMMIT of a small JSON row, WAL, same synchronous mode."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, payload TEXT NOT NULL)")
    payload = '{"tool_call_id":"call-1","worker_id":"w","attempt":1,"result":"1","duration_ms":0.01}'
    t0 = time.perf_counter()
    for i in range(count):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (k, payload) VALUES (?, ?)", (f"k{i}", payload))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed / count


def _worker(url: str, worker_id: str, barrier: Any, out: Any) -> None:
    keys: list[str] = []

    def noop(i: int) -> int:
        keys.append(str(current_idempotency_key()))
        return i

    store = open_store(url)
    barrier.wait()
    run_worker(store, {"noop": noop}, worker_id=worker_id, poll_seconds=0.01, idle_exit_seconds=0.5)
    store.close()
    out.put(keys)


def queue_calls(url: str, calls: int) -> float:
    """Queue the calls; return the seconds submitting took."""
    store = open_store(url)
    submitter = Executor(store, {"noop": lambda i: i})
    convs = [store.start_conversation(f"c{n}") for n in range(calls // PER_MESSAGE)]
    t0 = time.perf_counter()
    for n, conv in enumerate(convs):
        msg = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call-{n}-{i}",
                    "type": "function",
                    "function": {"name": "noop", "arguments": f'{{"i": {i}}}'},
                }
                for i in range(PER_MESSAGE)
            ],
        }
        submitter.submit(conv, msg)
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


def measure(url: str, calls: int) -> dict[str, float]:
    """Drain the queued calls' events into rate, latency and duplicate counts."""
    store = open_store(url)
    claimed: dict[str, float] = {}
    done: dict[str, float] = {}
    wins: Counter[str] = Counter()
    for event in store.iter_all():
        if isinstance(event, ToolCallClaimed):
            claimed[event.stream_id] = event.recorded_at.timestamp()
        elif isinstance(event, ToolCallSucceeded):
            done[event.stream_id] = event.recorded_at.timestamp()
            wins[event.stream_id] += 1
    store.close()
    latencies = sorted((done[s] - claimed[s]) * 1000 for s in done)
    span = max(done.values()) - min(claimed.values())
    return {
        "finished": len(done),
        "rate": len(done) / span if span > 0 else float("inf"),
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "dup_records": sum(n - 1 for n in wins.values()),
        "span": span,
    }


def run_workers(url: str, workers: int) -> list[str]:
    """Run ``workers`` processes over the queue; return every tool run's idempotency key."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(workers + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, f"w{n}", barrier, out)) for n in range(workers)]
    for p in procs:
        p.start()
    barrier.wait()
    keys: list[str] = []
    for _ in procs:
        keys.extend(out.get())
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"worker exited with {p.exitcode}")
    return keys


def inline(url: str, calls: int) -> float:
    """Seconds per call for execute_call in one process (request+claim, then result)."""
    store = open_store(url)
    ex = Executor(store, {"noop": lambda i: i})
    conv = store.start_conversation("inline")
    t0 = time.perf_counter()
    for n in range(calls):
        ex.execute_call(conv, f"call-{n}", "noop", f'{{"i": {n}}}', append_result=False)
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = parser.parse_args(argv)
    sync = args.synchronous
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        raws: list[float] = []
        for workers in [int(w) for w in args.workers.split(",")]:
            url = f"sqlite:///{tmp}/w{workers}.db?synchronous={sync}"
            # Raw commits are timed right before each configuration: the machine's disk varies.
            raw = raw_commit_seconds(Path(tmp) / f"raw{workers}.db", sync)
            raws.append(raw)
            submit = queue_calls(url, args.calls)
            keys = run_workers(url, workers)
            m = measure(url, args.calls)
            runs = Counter(keys)
            dup_runs = sum(n - 1 for n in runs.values()) + (args.calls - len(runs))
            per_call = submit / args.calls + m["span"] / args.calls
            rows.append(
                {
                    "mode": f"queue, {workers} proc",
                    "calls/s": f"{m['rate']:.0f}",
                    "p50 ms": f"{m['p50']:.2f}",
                    "p99 ms": f"{m['p99']:.2f}",
                    "dup runs": str(dup_runs),
                    "dup records": str(int(m["dup_records"])),
                    "raw ms": f"{raw * 1000:.2f}",
                    "per call ms": f"{per_call * 1000:.2f}",
                    "per call / raw": f"{per_call / raw:.2f}",
                }
            )
        raw = raw_commit_seconds(Path(tmp) / "raw-inline.db", sync)
        raws.append(raw)
        per_call = inline(f"sqlite:///{tmp}/inline.db?synchronous={sync}", args.calls)
        rows.append(
            {
                "mode": "inline, 1 proc",
                "calls/s": f"{1 / per_call:.0f}",
                "p50 ms": "-",
                "p99 ms": "-",
                "dup runs": "0",
                "dup records": "0",
                "raw ms": f"{raw * 1000:.2f}",
                "per call ms": f"{per_call * 1000:.2f}",
                "per call / raw": f"{per_call / raw:.2f}",
            }
        )
    print(
        f"{args.calls} trivial tool calls, SQLite WAL synchronous={sync}; raw ms = one INSERT+COMMIT, "
        f"timed before each row (median {statistics.median(raws) * 1000:.3f} ms)"
    )
    cols = list(rows[0])
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(r[c].ljust(w) for c, w in zip(cols, widths, strict=True)))
    bad = [r for r in rows if r["dup runs"] != "0" or r["dup records"] != "0"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

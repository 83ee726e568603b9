"""Rebuild every projection over a generated log, beside a raw SELECT over the same events.

    .venv/bin/python bench/projections.py                  # 1,000,000 events, SQLite
    .venv/bin/python bench/projections.py --events 100000  # quick run
    .venv/bin/python bench/projections.py --db postgresql://postgres@127.0.0.1:5432/test --events 100000

The log is generated through the public API with the Store's batch appends
(one ``start_conversation`` plus one atomic ``append`` of 49 messages per
conversation: user turns, assistant tool calls, tool results, answers), so the
rows are exactly what the store writes. A SQLite log is generated with
``synchronous=OFF`` and kept in ``--dir`` (reused when it already holds enough
events). Each measured phase runs in its own subprocess so that its peak RSS is
its own. Phases:

* ``raw select``: ``SELECT`` every event row in position order (fetchmany), nothing else;
* ``raw select + json``: the same, plus ``json.loads`` of each payload;
* ``rebuild <name>`` / ``rebuild all``: ``ProjectionRunner.rebuild`` from zero, committing
  each batch with its tracking row.

Targets: rebuild all >= 25% of the raw select rate; peak RSS < 300 MB.

Where a rebuild's time goes (SQLite layout 2, 1M events, thread CPU time of each step
of the runner, median of five runs, in seconds): inserting the read-model rows 2.05
(nearly all of them search rows), reading the log 2.0 (the raw select alone takes
1.8-3.0 s of wall time on the same machine), FTS5 indexing once at the end 1.85,
decoding payloads (orjson) 1.4, the index fold 1.1, the search fold 1.0, WAL commits
0.95, deriving a page's columns 0.5, the rest 0.4: 11.2 s of CPU, 11.8 s of wall time.
What made it faster on layout 2 (from 15.4-20.4 s): the runner reads the log in pages
straight from the events table (``projections/pages.py``) instead of ``read_all``'s
records: no join with the streams and types (1.3 us per event), no record built with
two hex strings and an ISO time (1.1 us), no hash or event id read, and payloads read
as bytes, which orjson parses without a round trip through text (-1 us per event);
message ids are left to the page instead of being filled into every payload; a column
that is NULL in all rows of an insert is left out of it (binding None costs ~0.4 us in
CPython's sqlite3: -0.5 s); payloads are parsed a type at a time by one ``map``.
Tried without gain: larger pages or transactions, a thread reading the next page (its
GIL hand-offs cost more than the overlap saved), a thread committing behind the runner,
FTS5 ``pgsz``/``automerge``, a larger WAL autocheckpoint, a larger page cache or mmap.
Most of what is left is SQLite's own work (inserts, FTS5, commits: ~4.9 s) and the read
itself. Earlier (layout 1): search rows keyed by log position, an FTS5 index without
document sizes built in bulk with a 64 MB term buffer, old tables dropped without zeroing
their pages, the cyclic collector off for a whole batch.
The machine is shared: the raw select alone moves by a third between runs, and the
ratios with it; compare ratios over several runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PER_CONVERSATION = 50  # events: one start + 49 messages


def _messages(c: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    turn = 0
    while len(out) < PER_CONVERSATION - 1:
        call = f"call_{c}_{turn}"
        out.append(
            {
                "role": "user",
                "content": f"Conversation {c} turn {turn}: what is the refund policy for order {c * 7 + turn}?",
            }
        )
        out.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call,
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": json.dumps({"order": c * 7 + turn})},
                    }
                ],
            }
        )
        out.append(
            {
                "role": "tool",
                "tool_call_id": call,
                "content": json.dumps({"status": "shipped", "refundable": turn % 2 == 0, "note": "café crème ✈️"}),
            }
        )
        out.append(
            {
                "role": "assistant",
                "content": f"Order {c * 7 + turn} is shipped; refunds possible within 30 days. Réponse {turn}.",
            }
        )
        turn += 1
    return out[: PER_CONVERSATION - 1]


def generate(url: str, events: int) -> int:
    """Fill the log up to ``events`` events with Store batch appends; return the events present."""
    from chatledger.store import open_store

    store = open_store(url, synchronous="OFF") if url.startswith("sqlite") else open_store(url)
    have = store.last_position()
    start = have // PER_CONVERSATION
    total = events // PER_CONVERSATION
    t0 = time.perf_counter()
    for c in range(start, total):
        conv = store.start_conversation(f"bench-{c:07d}", metadata={"customer": c % 997})
        store.append(conv, _messages(c))
        if c % 2000 == 0 and c > start:
            rate = (c - start) * PER_CONVERSATION / (time.perf_counter() - t0)
            print(f"  generated {c * PER_CONVERSATION:,} events ({rate:,.0f}/s)", file=sys.stderr)
    count = store.last_position()
    store.close()
    return count


def _phase(url: str, phase: str) -> dict[str, Any]:
    """Run one measured phase in this process; report events, seconds and peak RSS."""
    from chatledger.projections import ProjectionRunner
    from chatledger.store import open_store

    store = open_store(url)
    t0 = time.perf_counter()
    if phase.startswith("raw"):
        decode = phase == "raw-json"
        count = 0
        recorder: Any = store.recorder
        if url.startswith("sqlite"):
            # Every stored column of every event row, as the table holds them (layout 2).
            cur = recorder.connection.execute(
                "SELECT position, sid, version, type, schema_version, event_id, key, recorded_at, payload, hash "
                "FROM events ORDER BY position"
            )
            while rows := cur.fetchmany(5000):
                count += len(rows)
                if decode:
                    for row in rows:
                        json.loads(row[8])
        else:
            with recorder.connection() as conn, conn.cursor(name="bench_raw") as cur:
                cur.itersize = 5000
                cur.execute(
                    "SELECT position, stream_id, version, conversation_id, tenant, event_id, type, schema_version, "
                    "key, recorded_at, payload, hash FROM events ORDER BY position"
                )
                for row in cur:
                    count += 1
                    if decode:
                        json.loads(row[10])
    else:
        name = phase.split(":", 1)[1]
        runner = ProjectionRunner(store, batch_size=2000)
        count = runner.rebuild(None if name == "all" else [name])
    seconds = time.perf_counter() - t0
    store.close()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"phase": phase, "events": count, "seconds": seconds, "rss_mb": rss_kb / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log (default 1,000,000)")
    parser.add_argument("--db", default=None, help="store URL (default: a SQLite file in --dir)")
    parser.add_argument("--dir", default=None, help="where the generated SQLite log is kept (default: a temp dir)")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(_phase(args.db, args.phase)))
        return 0
    folder = Path(args.dir or tempfile.mkdtemp(prefix="chatledger-bench-"))
    url = args.db or f"sqlite:///{folder / f'bench-{args.events}.db'}"
    print(f"log: {url}", file=sys.stderr)
    t0 = time.perf_counter()
    count = generate(url, args.events)
    print(f"  {count:,} events ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    from chatledger.projections import default_projections

    phases = ["raw", "raw-json", *[f"rebuild:{p.name}" for p in default_projections()], "rebuild:all"]
    results = []
    for phase in phases:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        out = subprocess.run(
            [sys.executable, __file__, "--db", url, "--phase", phase], capture_output=True, text=True, env=env
        )
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {phase}: done", file=sys.stderr)
    raw_rate = results[0]["events"] / results[0]["seconds"]
    print(f"\n{count:,} events, backend {url.split(':', 1)[0]}\n")
    print(f"{'phase':<24} {'events':>10} {'seconds':>8} {'events/s':>10} {'vs raw':>7} {'peak RSS':>9}")
    for r in results:
        rate = r["events"] / r["seconds"]
        print(
            f"{r['phase']:<24} {r['events']:>10,} {r['seconds']:>8.2f} {rate:>10,.0f} "
            f"{rate / raw_rate:>6.0%} {r['rss_mb']:>7.0f}MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

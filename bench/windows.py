"""History windows: loading a window of W messages from a long conversation, beside a raw indexed SELECT.

A window is read from the conversation's tail, so it should cost what its W messages cost,
not what the conversation costs. Measured side by side on one SQLite file (WAL), in turns,
best of several rounds each:

- chatledger: ``window(store, conv, max_messages=W)`` on a conversation of N messages
  (the head probe, the tail read in chunks, unit grouping, the provider-rule check);
- raw: ``SELECT payload FROM messages WHERE conversation_id = ? AND version > ? ORDER BY version``
  of the same W rows from a ``(conversation_id, version, payload)`` table, plus ``json.loads``;
- the full history load (``Store.messages``) and raw's full SELECT, for scale.

Target: the window at most 1.5x the raw indexed SELECT of its rows, flat in N.

    python bench/windows.py [--messages 50000] [--window 50] [--rounds 9]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from chatledger.store import open_store
from chatledger.store.window import window

USER = {"role": "user", "content": "What is the weather in Rome today? " * 3}
ANSWER = {"role": "assistant", "content": "It is sunny in Rome, 24 degrees, light wind from the west. " * 2}


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50_000, help="messages in the conversation (default 50000)")
    parser.add_argument("--window", type=int, nargs="+", default=[20, 50, 200], help="window sizes W")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per measure; the best is kept (default 9)")
    args = parser.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{Path(d) / 'chat.db'}")
        conv = store.start_conversation()
        pairs = [m for _ in range(n // 2) for m in (USER, ANSWER)]
        for start in range(0, len(pairs), 1000):
            store.append(conv, pairs[start : start + 1000])
        raw = sqlite3.connect(Path(d) / "raw.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute(
            "CREATE TABLE messages (conversation_id TEXT NOT NULL, version INTEGER NOT NULL, "
            "payload TEXT NOT NULL, PRIMARY KEY (conversation_id, version))"
        )
        raw.execute("BEGIN")
        raw.executemany(
            "INSERT INTO messages VALUES (?, ?, ?)", ((conv, v + 1, json.dumps(m)) for v, m in enumerate(pairs))
        )
        raw.execute("COMMIT")

        def raw_rows(after: int) -> list[object]:
            rows = raw.execute(
                "SELECT payload FROM messages WHERE conversation_id = ? AND version > ? ORDER BY version", (conv, after)
            ).fetchall()
            return [json.loads(r[0]) for r in rows]

        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}; conversation of {n:,} messages")
        print("| measure | chatledger ms | raw sqlite3 ms | ratio |")
        print("|---|---:|---:|---:|")
        for w in args.window:
            shown = window(store, conv, max_messages=w)
            assert len(shown.messages) == w, (len(shown.messages), w)
            ours = best(lambda w=w: window(store, conv, max_messages=w), args.rounds)  # type: ignore[misc]
            theirs = best(lambda w=w: raw_rows(len(pairs) - w), args.rounds)  # type: ignore[misc]
            print(f"| window of {w} messages | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x |")
        ours = best(lambda: store.messages(conv), max(1, args.rounds // 3))
        theirs = best(lambda: raw_rows(0), max(1, args.rounds // 3))
        print(f"| full history load ({n:,} messages) | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f}x |")
        store.close()
        raw.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

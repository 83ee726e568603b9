# ruff: noqa: E402
"""What chatledger adds to one AgentChat request, beside the raw commits it makes; and duplicates' model calls.

Run: python bench/requests.py [--requests 10] [--burst 8] [--lengths 0,1000,5000] [--dir DIR]

One request = fresh agents, the history loaded, one model turn that calls a tool, the
tool run, a second model turn that answers, the turn stored (AgentChat's
``AssistantAgent`` with ``reflect_on_tool_use``, an offline scripted model, no delay).

For conversations that already hold 0, 1,000 and 5,000 messages it measures, in one run,
requests taking turns:

- **without persistence**: a stock ``AssistantAgent`` whose model context already holds
  the same prior messages in memory;
- **with chatledger**: ``chatledger_agent`` on a SQLite file (``synchronous=FULL``, the
  default): the request's turn claimed and completed, the history read, each model
  answer recorded, the tool call run through the executor, the turn stored;
- **raw sqlite3**, on the same file system with the same pragmas: as many durable commits
  (BEGIN + one INSERT + COMMIT) as chatledger made for the request (counted), and a
  ``SELECT`` + ``json.loads`` of the prior messages.

chatledger's *added* time is (with chatledger - without persistence); the last column is
added ÷ (raw commits + raw SELECT), the ratio the target speaks of (≤ 1.5).

Then bursts of N concurrent deliveries of one request (one store handle each): model
requests per burst, beside one request's.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the ``requests`` package (which jsonref, under AutoGen, imports)
# when run as ``python bench/requests.py``: its folder leaves the import path first.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_core.model_context import UnboundedChatCompletionContext
from autogen_core.models import AssistantMessage, LLMMessage, UserMessage

from chatledger.adapters.agentchat import chatledger_agent
from chatledger.adapters.scripted import ScriptedChatCompletionClient, call, current_prompt
from chatledger.store import Store, open_store

USER = "Please check the weather in Rome and book a table for two at eight. " * 2
ANSWER = "Done: it is sunny in Rome and the table is booked for eight o'clock tonight. " * 2


def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def model(delay: float = 0.0) -> ScriptedChatCompletionClient:
    """``weather X``: a tool call, then an answer; anything else: an echo."""

    def reply(messages: Sequence[LLMMessage]) -> Any:
        prompt, step = current_prompt(messages)
        words = prompt.split()
        if words[:1] == ["weather"]:
            return call("get_weather", city=words[1]) if step == 0 else f"It is sunny in {words[1]}."
        return "ok"

    return ScriptedChatCompletionClient(reply, delay=delay)


def prior(n: int) -> list[dict[str, Any]]:
    """n prior chat messages, user and assistant in turn."""
    return [
        {"role": "user", "content": USER} if i % 2 == 0 else {"role": "assistant", "content": ANSWER} for i in range(n)
    ]


def as_llm(messages: list[dict[str, Any]]) -> list[LLMMessage]:
    """The same prior messages as AgentChat holds them in memory."""
    return [
        UserMessage(content=m["content"], source="user")
        if m["role"] == "user"
        else AssistantMessage(content=m["content"], source="assistant")
        for m in messages
    ]


# -- one request, three ways ------------------------------------------------------------------


async def without_persistence(history: list[LLMMessage]) -> float:
    t0 = time.perf_counter()
    agent = AssistantAgent(
        "assistant",
        model_client=model(),
        tools=[get_weather],
        reflect_on_tool_use=True,
        model_context=UnboundedChatCompletionContext(initial_messages=list(history)),
    )
    await agent.run(task="weather Rome")
    return time.perf_counter() - t0


async def with_chatledger(store: Store, conv: str) -> float:
    t0 = time.perf_counter()
    agent = chatledger_agent(
        store,
        conv,
        name="assistant",
        request_id=uuid.uuid4().hex,
        model_client=model(),
        tools=[get_weather],
        reflect_on_tool_use=True,
    )
    await agent.run(task="weather Rome")
    return time.perf_counter() - t0


@contextmanager
def counting_commits(store: Store) -> Iterator[list[int]]:
    """Count the write transactions (each one durable commit) the store makes inside the block."""
    count = [0]
    recorder: Any = store.recorder
    write, alone = recorder.write, store._append_alone

    def counted_write(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return write(*args, **kwargs)

    def counted_alone(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        assert alone is not None
        return alone(*args, **kwargs)

    recorder.write = counted_write
    if alone is not None:
        store._append_alone = counted_alone
    try:
        yield count
    finally:
        recorder.write = write
        store._append_alone = alone


def raw_setup(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS messages (conversation_id TEXT NOT NULL, version INTEGER NOT NULL, "
        "payload TEXT NOT NULL, PRIMARY KEY (conversation_id, version))"
    )
    return conn


def raw_commits(conn: sqlite3.Connection, conv: str, start: int, n: int) -> float:
    text = json.dumps({"role": "assistant", "content": ANSWER})
    t0 = time.perf_counter()
    for v in range(start, start + n):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO messages VALUES (?, ?, ?)", (conv, v, text))
        conn.execute("COMMIT")
    return time.perf_counter() - t0


def raw_select(conn: sqlite3.Connection, conv: str) -> float:
    t0 = time.perf_counter()
    rows = conn.execute("SELECT payload FROM messages WHERE conversation_id = ? ORDER BY version", (conv,)).fetchall()
    [json.loads(r[0]) for r in rows]
    return time.perf_counter() - t0


def measure(tmp: Path, length: int, requests: int) -> tuple[float, float, float, float, float]:
    """Medians (s) of: without persistence, with chatledger, raw commits, raw SELECT; and commits per request."""
    store = open_store(f"sqlite:///{tmp / f'store-{length}.db'}")
    raw = raw_setup(tmp / f"raw-{length}.db")
    messages = prior(length)
    conv = f"c{length}"
    store.start_conversation(conv)
    for i in range(0, length, 500):
        store.append(conv, messages[i : i + 500])
    raw.execute("BEGIN")
    raw.executemany(
        "INSERT INTO messages VALUES (?, ?, ?)", ((conv, v, json.dumps(m)) for v, m in enumerate(messages, 1))
    )
    raw.execute("COMMIT")
    history = as_llm(messages)
    plain: list[float] = []
    ledger: list[float] = []
    commits: list[int] = []
    raws: list[float] = []
    selects: list[float] = []
    version = length + 1
    asyncio.run(with_chatledger(store, conv))  # warm-up
    asyncio.run(without_persistence(history))
    for _ in range(requests):
        plain.append(asyncio.run(without_persistence(history)))
        with counting_commits(store) as count:
            ledger.append(asyncio.run(with_chatledger(store, conv)))
        commits.append(count[0])
        raws.append(raw_commits(raw, conv, version + 10_000_000, count[0]))
        version += count[0]
        selects.append(raw_select(raw, conv) if length else 0.0)
    store.close()
    raw.close()
    return (
        statistics.median(plain),
        statistics.median(ledger),
        statistics.median(raws),
        statistics.median(selects),
        statistics.median(commits),
    )


async def burst(url: str, n: int) -> tuple[int, int]:
    """Model requests made by one request, and by n concurrent deliveries of another."""
    stores = [open_store(url) for _ in range(n)]
    try:
        conv = stores[0].start_conversation()
        counted: list[ScriptedChatCompletionClient] = []

        async def deliver(store: Store, rid: str) -> None:
            client = model(delay=0.02)
            counted.append(client)
            agent = chatledger_agent(
                store,
                conv,
                name="assistant",
                request_id=rid,
                model_client=client,
                tools=[get_weather],
                reflect_on_tool_use=True,
            )
            await agent.run(task=f"weather {rid}")

        await deliver(stores[0], "single")
        single = sum(len(c.create_calls) for c in counted)
        counted.clear()
        await asyncio.gather(*(deliver(s, "dup") for s in stores))
        return single, sum(len(c.create_calls) for c in counted)
    finally:
        for s in stores:
            s.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="timed requests per history length")
    parser.add_argument("--burst", type=int, default=8, help="concurrent duplicate deliveries")
    parser.add_argument("--lengths", default="0,1000,5000", help="prior messages, comma-separated")
    parser.add_argument("--dir", default=None, help="where the database files go (default: a temp dir)")
    args = parser.parse_args(argv)
    ms: Callable[[float], str] = lambda s: f"{s * 1000:.2f}"  # noqa: E731
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(
            "| prior messages | request without persistence (ms) | with chatledger (ms) | added (ms) "
            "| commits per request | raw commits (ms) | raw SELECT (ms) | added ÷ (raw commits + SELECT) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for length in [int(n) for n in args.lengths.split(",")]:
            plain, ledger, raws, select, commits = measure(Path(tmp), length, args.requests)
            added = ledger - plain
            print(
                f"| {length:>5} | {ms(plain)} | {ms(ledger)} | {ms(added)} | {commits:.0f} | {ms(raws)} "
                f"| {ms(select)} | {added / (raws + select):.2f}x |"
            )
        single, dup = asyncio.run(burst(f"sqlite:///{Path(tmp) / 'burst.db'}", args.burst))
        print()
        print("| deliveries | model requests | one request's model requests |")
        print("|---|---|---|")
        print(f"| {args.burst} concurrent duplicates | {dup} | {single} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

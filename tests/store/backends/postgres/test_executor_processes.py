"""Worker processes executing tool calls submitted by agent processes, all on PostgreSQL (issue 6)."""

from __future__ import annotations

import multiprocessing as mp
import time

import psycopg

from chatledger.store import open_store

from .helpers import executor_agent, executor_worker

AGENTS, CONVERSATIONS, TURNS, CALLS = 4, 25, 2, 10  # 4 * 25 * 2 * 10 = 2,000 tool calls
WORKERS = 8
# A deadline for a hung run, not a speed check: the machine running the suite may be loaded (benchmarks measure speed).
DEADLINE = 600.0


def test_eight_workers_run_2000_calls_from_four_agents_exactly_once(postgres_url: str) -> None:
    """Four agent processes submit 2,000 tool calls (two turns of ten calls in each of their 25
    conversations) while eight worker processes execute them: every call runs exactly once
    (counted in a PostgreSQL table by call), is recorded once as succeeded, and every
    conversation's history is valid with each result after its call."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE tool_runs (call_key text PRIMARY KEY, runs integer NOT NULL)")
    open_store(postgres_url).close()  # the schema exists before twelve processes open it
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(AGENTS + WORKERS)
    agents_done = ctx.Event()
    finished = ctx.Queue()
    agents = [
        ctx.Process(target=executor_agent, args=(postgres_url, a, CONVERSATIONS, TURNS, CALLS, barrier))
        for a in range(AGENTS)
    ]
    workers = [
        ctx.Process(target=executor_worker, args=(postgres_url, barrier, agents_done, finished)) for _ in range(WORKERS)
    ]
    started = time.monotonic()
    for p in agents + workers:
        p.start()
    try:
        for p in agents:
            p.join(timeout=max(1.0, DEADLINE - (time.monotonic() - started)))
        agents_done.set()
        completed = [finished.get(timeout=max(1.0, DEADLINE + 10 - (time.monotonic() - started))) for _ in workers]
        for p in workers:
            p.join(timeout=10)
    finally:
        for p in agents + workers:
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in agents + workers] == [0] * (AGENTS + WORKERS)

    expected = {
        f"a{a}-c{c}/a{a}-c{c}-t{t}-{i}"
        for a in range(AGENTS)
        for c in range(CONVERSATIONS)
        for t in range(TURNS)
        for i in range(CALLS)
    }
    with psycopg.connect(postgres_url) as conn:
        runs = dict(conn.execute("SELECT call_key, runs FROM tool_runs").fetchall())
    assert set(runs) == expected  # none lost
    assert set(runs.values()) == {1}  # none run twice
    assert sum(completed) == len(expected)
    assert sum(1 for n in completed if n) >= 2  # the calls were shared out, not run by one worker

    store = open_store(postgres_url)
    try:
        calls = store.recorder.list_heads("tool_call", store.tenant)
        assert len(calls) == len(expected)
        assert {h.status for h in calls} == {"succeeded"}
        for a in range(AGENTS):
            for c in range(CONVERSATIONS):
                history = store.history(f"a{a}-c{c}")  # raises if any call lacks its result
                assert len(history) == 1 + TURNS * (1 + CALLS)
                for t in range(TURNS):
                    turn = history[1 + t * (1 + CALLS) : 1 + (t + 1) * (1 + CALLS)]
                    ids = [call["id"] for call in turn[0]["tool_calls"]]
                    assert sorted(m["tool_call_id"] for m in turn[1:]) == sorted(ids)
                    assert {m["content"] for m in turn[1:]} == {f"item {i}" for i in range(CALLS)}
        assert store.verify().ok
    finally:
        store.close()

"""eventsourcing's recorders beside chatledger's persistence module for them, in one run.

Run: python bench/eventsourcing_module.py [--url postgresql://postgres@127.0.0.1:5432/test] [--seconds 6] [--rounds 3]
     [--writers 1,8] [--history 1000] [--no-postgres]

Both engines are driven through eventsourcing's own interface, each built by its factory
from an application environment (``PERSISTENCE_MODULE`` = ``chatledger.adapters.eventsourcing``,
or eventsourcing's ``eventsourcing.sqlite`` / ``eventsourcing.postgres``):

- **appends**: in alternating turns (``--rounds``), writer processes, each appending to its own aggregate one event per
  ``insert_events`` call (the next version of its stream, a 200-byte state), for a fixed time:
  events/s over all writers and the median latency. SQLite with 1 writer, PostgreSQL with each
  count of ``--writers``. Both SQLite engines use WAL at ``synchronous=FULL`` (their defaults).
- **history**: ``select_events`` of a whole aggregate of ``--history`` events (what loading an
  aggregate without snapshots reads), median ms per read.

Each cell prints chatledger's figure, eventsourcing's and the ratio chatledger ÷ eventsourcing
(above 1 is faster for appends/s, below 1 is faster for ms). Every run uses fresh files and a
fresh PostgreSQL schema, dropped at the end. Read the ratios: absolute figures move with the
machine and whatever else it runs. (The file is not named ``eventsourcing.py``: run as a script,
its folder comes first on ``sys.path``, where that name would hide the package from every bench.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TOPIC = "bench.accounts:Account.Credited"
STATE = (b'{"amount":{"_type_":"decimal_str","_data_":"12.50"},"note":"' + b"x" * 140 + b'"}')[:200]
OURS = "chatledger.adapters.eventsourcing"


def _with_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}"


def environments(tmp: Path, url: str | None, schema: str) -> dict[tuple[str, str], dict[str, str]]:
    """The application environment of each (backend, engine)."""
    envs = {
        ("SQLite", "chatledger"): {"PERSISTENCE_MODULE": OURS, "CHATLEDGER_URL": f"sqlite:///{tmp / 'cl.db'}"},
        ("SQLite", "eventsourcing"): {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(tmp / "es.db"),
        },
    }
    if url is not None:
        parts = urlsplit(url)
        envs["PostgreSQL", "chatledger"] = {"PERSISTENCE_MODULE": OURS, "CHATLEDGER_URL": _with_schema(url, schema)}
        envs["PostgreSQL", "eventsourcing"] = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": parts.path.lstrip("/"),
            "POSTGRES_HOST": parts.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": parts.username or "postgres",
            "POSTGRES_PASSWORD": parts.password or "",
            "POSTGRES_SCHEMA": schema,
        }
    return envs


def _recorder(env: dict[str, str]) -> Any:
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    factory = InfrastructureFactory.construct(Environment("BenchApp", env))
    return factory, factory.application_recorder()


def writer(env: dict[str, str], seconds: float, barrier: Any, out: Any) -> None:
    """Append one event per call to a stream of this process's own until the time is up."""
    from eventsourcing.persistence import StoredEvent

    factory, recorder = _recorder({**env, "CREATE_TABLE": "n"})
    oid = uuid.uuid4()
    version = 0
    for _ in range(20):  # warm the connection, statements and caches
        version += 1
        recorder.insert_events([StoredEvent(oid, version, TOPIC, STATE)])
    barrier.wait()
    times = []
    end = time.perf_counter() + seconds
    while (t0 := time.perf_counter()) < end:
        version += 1
        recorder.insert_events([StoredEvent(oid, version, TOPIC, STATE)])
        times.append(time.perf_counter() - t0)
    factory.close()
    out.put(times)


def appends(env: dict[str, str], writers: int, seconds: float) -> tuple[float, float]:
    """Events per second over ``writers`` processes, and the median latency in ms."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(writers + 1)
    out = ctx.Queue()
    procs = [ctx.Process(target=writer, args=(env, seconds, barrier, out)) for _ in range(writers)]
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


def alternated(
    ours: dict[str, str], theirs: dict[str, str], writers: int, seconds: float, rounds: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Both engines' appends measured in turns (``rounds`` each), so that load changes hit both alike."""
    results: dict[str, list[tuple[float, float]]] = {"ours": [], "theirs": []}
    for _ in range(rounds):
        results["ours"].append(appends(ours, writers, seconds / rounds))
        results["theirs"].append(appends(theirs, writers, seconds / rounds))
    a, b = results["ours"], results["theirs"]
    return (
        (statistics.mean(r[0] for r in a), statistics.median(r[1] for r in a)),
        (statistics.mean(r[0] for r in b), statistics.median(r[1] for r in b)),
    )


def history(env: dict[str, str], length: int, reads: int) -> float:
    """Median ms of ``select_events`` of a whole aggregate of ``length`` events."""
    from eventsourcing.persistence import StoredEvent

    factory, recorder = _recorder(env)
    oid = uuid.uuid4()
    for start in range(1, length + 1, 100):
        batch = range(start, min(start + 100, length + 1))
        recorder.insert_events([StoredEvent(oid, v, TOPIC, STATE) for v in batch])
    assert len(recorder.select_events(oid)) == length
    times = []
    for _ in range(reads):
        t0 = time.perf_counter()
        recorder.select_events(oid)
        times.append(time.perf_counter() - t0)
    factory.close()
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("CHATLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per append cell and engine")
    parser.add_argument("--rounds", type=int, default=3, help="turns per append cell, engines alternating")
    parser.add_argument("--writers", default="1,8", help="PostgreSQL writer process counts")
    parser.add_argument("--history", type=int, default=1000, help="events in the aggregate read back")
    parser.add_argument("--reads", type=int, default=30, help="history reads per engine")
    args = parser.parse_args()
    url = None if args.no_postgres else args.url
    schema = f"cl_bench_es_{uuid.uuid4().hex[:10]}"
    if url is not None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    rows: list[tuple[str, str, float, float, str]] = []
    try:
        with tempfile.TemporaryDirectory() as folder:
            envs = environments(Path(folder), url, schema)
            for env in envs.values():
                _recorder(env)[0].close()  # create the tables once, before the writers race to
            backends = ["SQLite"] + (["PostgreSQL"] if url is not None else [])
            for backend in backends:
                ours, theirs = envs[backend, "chatledger"], envs[backend, "eventsourcing"]
                counts = [1] if backend == "SQLite" else [int(w) for w in args.writers.split(",")]
                for writers in counts:
                    (a, a_ms), (b, b_ms) = alternated(ours, theirs, writers, args.seconds, args.rounds)
                    rows.append((backend, f"appends, {writers} writer(s): events/s", a, b, "x"))
                    rows.append((backend, f"appends, {writers} writer(s): p50 ms", a_ms, b_ms, "x"))
                a_ms = history(ours, args.history, args.reads)
                b_ms = history(theirs, args.history, args.reads)
                rows.append((backend, f"history read, {args.history} events: ms", a_ms, b_ms, "x"))
    finally:
        if url is not None:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    print(f"eventsourcing {_version()}: chatledger's module beside eventsourcing's recorders, {os.cpu_count()} CPUs")
    print()
    print("| backend | measure | chatledger | eventsourcing | ratio |")
    print("|---|---|---:|---:|---:|")
    for backend, name, ours_value, theirs_value, _ in rows:
        print(f"| {backend} | {name} | {ours_value:,.2f} | {theirs_value:,.2f} | {ours_value / theirs_value:.2f}x |")
    sys.stdout.flush()


def _version() -> str:
    from importlib.metadata import version

    return version("eventsourcing")


if __name__ == "__main__":
    main()

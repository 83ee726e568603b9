"""The benchmarks run, on a small scale, and print every measure the README shows.

A benchmark that no longer runs (an API it drives changed, eventsourcing's among
them) would leave the README's numbers unverifiable. These run each one with a
few operations per measurement; timings are not checked (they belong to bench/),
only that every row is there and, for the executor, that no tool ran twice.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO, postgres_base_url

pytestmark = pytest.mark.bench

ROW = re.compile(r"^\| (FULL|NORMAL) \| (.+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+)x \|$")


def bench(script: str, *args: str) -> str:
    """What ``bench/<script>`` prints when run with ``args`` (it must exit 0)."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout


def test_append_benchmark_prints_every_measure(tmp_path: Path) -> None:
    out = bench("append.py", "--appends", "5", "--dir", str(tmp_path))
    rows = [m.groups() for m in map(ROW.match, out.splitlines()) if m]
    measures = {(sync, name) for sync, name, *_ in rows}
    for sync in ("FULL", "NORMAL"):
        for length in ("     0", "  1000", " 10000"):
            for kind in ("latency, median (ms)", "throughput (appends/s)"):
                assert (sync, f"append, {length} prior events: {kind}") in measures
        for n in (1000, 5000):
            assert (sync, f"history load, {n} messages (ms)") in measures
        assert (sync, "size per 1,000 messages (KB)") in measures
    assert len(rows) == len(measures) == 18
    for _sync, name, store, raw, ratio, reference in rows:
        assert float(store) > 0 and float(raw) > 0 and float(ratio) > 0 and float(reference) > 0, name


def test_executor_benchmark_runs_every_mode_without_duplicates() -> None:
    out = bench("executor.py", "--calls", "30", "--workers", "1,2")
    rows = {line[:16].strip(): line[16:].split() for line in out.splitlines() if line.startswith(("queue", "inline"))}
    assert set(rows) == {"queue, 1 proc", "queue, 2 proc", "inline, 1 proc"}
    for mode, cells in rows.items():
        calls_per_second, dup_runs, dup_records = cells[0], cells[3], cells[4]
        assert float(calls_per_second) > 0 and (dup_runs, dup_records) == ("0", "0"), mode


def test_postgres_benchmark_prints_a_row_per_writer_count() -> None:
    out = bench("postgres.py", "--url", postgres_base_url(), "--seconds", "0.3", "--writers", "1,2")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert [cells[0].strip() for cells in rows] == ["1", "2"]
    for cells in rows:
        assert cells[-1].strip().endswith("%") and int(cells[-1].strip()[:-1]) > 0


def test_projections_benchmark_rebuilds_every_read_model(tmp_path: Path) -> None:
    out = bench("projections.py", "--events", "2000", "--dir", str(tmp_path))
    phases = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("raw", "rebuild:"))}
    assert set(phases) == {
        "raw",
        "raw-json",
        "rebuild:conversations",
        "rebuild:search",
        "rebuild:tool_audit",
        "rebuild:all",
    }
    assert all(cells[1] == "2,000" for cells in phases.values())


def test_windows_benchmark_prints_every_window_and_the_full_load() -> None:
    out = bench("windows.py", "--messages", "2000", "--window", "20", "50", "--rounds", "2")
    rows = [line.split("|")[1].strip() for line in out.splitlines() if re.match(r"^\| (window|full)", line)]
    assert rows == ["window of 20 messages", "window of 50 messages", "full history load (2,000 messages)"]


def test_eventsourcing_benchmark_prints_every_measure() -> None:
    """bench/eventsourcing_module.py measures both engines' appends and history reads on every backend it is given."""
    url = os.environ.get("CHATLEDGER_TEST_POSTGRES_URL")
    args = ["--seconds", "0.4", "--rounds", "1", "--history", "50", "--reads", "2", "--writers", "1,2"]
    out = bench("eventsourcing_module.py", *args, *(["--url", url] if url else ["--no-postgres"]))
    rows = [
        line.split(" | ") for line in out.splitlines() if line.startswith("| SQLite") or line.startswith("| PostgreSQL")
    ]
    expected = 3 + (5 if url else 0)
    assert len(rows) == expected, out
    for row in rows:
        assert float(row[2].replace(",", "")) > 0 and float(row[3].replace(",", "")) > 0, row


def test_requests_benchmark_prints_every_length_and_the_duplicate_burst(tmp_path: Path) -> None:
    """bench/requests.py prints a row per history length and a burst of duplicates costing one request's model calls."""
    out = bench("requests.py", "--requests", "1", "--burst", "3", "--lengths", "0,40", "--dir", str(tmp_path))
    rows = [line.split("|")[1].strip() for line in out.splitlines() if re.match(r"^\|\s+\d+ \|", line)]
    assert rows == ["0", "40"], out
    burst = next(line for line in out.splitlines() if "concurrent duplicates" in line).split("|")
    assert burst[2].strip() == burst[3].strip() == "2", out

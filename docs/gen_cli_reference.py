"""Regenerate docs/cli.md's command reference from the parser's own `--help` texts.

Run `python docs/gen_cli_reference.py` after changing a command; tests/test_docs.py
fails while docs/cli.md and `--help` disagree, or when a command is undocumented.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "cli.md"
START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def reference() -> str:
    """The markdown of every command's help, in the parser's order."""
    os.environ["COLUMNS"] = "100"
    from chatledger.adapters.cli import build_parser

    parser = build_parser()
    parts = ["```text", parser.format_help().rstrip(), "```"]
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subs.choices.items():
        parts += ["", f"### `chatledger {name}`", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts)


def section(text: str) -> str:
    """The page's text between the reference markers."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


def main() -> int:
    text = PAGE.read_text(encoding="utf-8")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    PAGE.write_text(f"{head}{START}\n{reference()}\n{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

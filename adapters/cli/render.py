"""Rendering for the CLI: aligned text tables, JSON, and progress on a terminal only."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["print_json", "print_table", "progress"]

T = TypeVar("T")


def print_json(value: Any) -> None:
    """Print a value as JSON (unicode kept) on stdout."""
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _cell(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], max_width: int = 60) -> None:
    """Print rows as an aligned table with a header; '(none)' when empty."""
    if not rows:
        print("(none)")
        return
    cells = [[_cell(row.get(c, ""), max_width) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def progress(items: Iterable[T], total: int | None, label: str) -> Iterator[T]:
    """Yield items, drawing a progress bar on stderr when it is a terminal (never when piped)."""
    if not sys.stderr.isatty():
        yield from items
        return
    for done, item in enumerate(items, 1):
        yield item
        if done % 50 == 0 or done == total:
            if total:
                filled = int(30 * done / total)
                sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}")
            else:
                sys.stderr.write(f"\r{label} {done}")
            sys.stderr.flush()
    sys.stderr.write("\n")

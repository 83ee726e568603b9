"""``chatledger import`` is checked whole before it writes, and re-running any import (complete,
failed, or SIGKILLed mid-way) never duplicates a conversation or a message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from chatledger.adapters.cli.main import main as cli
from chatledger.adapters.openai_format import import_jsonl
from chatledger.store import ConflictError, Store, ValidationError, open_store


def _record(i: int, with_id: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
        "topic": "import test",
    }
    if with_id:
        record["id"] = f"conv-{i}"
    return record


def _write(path: Path, records: list[Any], raw: dict[int, str] | None = None) -> None:
    lines = [json.dumps(r) for r in records]
    for index, text in (raw or {}).items():
        lines[index] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _counts(store: Store) -> tuple[int, int]:
    """(conversations, messages) stored."""
    convs = store.conversations()
    return len(convs), sum(len(store.messages(c.conversation_id)) for c in convs)


def _contents(store: Store) -> list[str]:
    """Every stored message's content, sorted: duplicates show as repeats."""
    return sorted(m["content"] for c in store.conversations() for m in store.messages(c.conversation_id))


def test_a_bad_line_writes_nothing_and_the_fixed_file_imports_once(tmp_path: Path) -> None:
    """A bad line 3 fails the import before anything is written; the fixed file, run three times,
    stores each record (with or without id) exactly once."""
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    path = tmp_path / "in.jsonl"
    records = [_record(0), _record(1, with_id=True), _record(2), _record(3), _record(3)]
    _write(path, records, {2: '{"messages": [{"role": "wizard", "content": "x"}]}'})
    assert cli(["--db", url, "import", str(path)]) == 1
    with open_store(url) as store:
        assert _counts(store) == (0, 0)
    _write(path, records)
    for _ in range(3):
        assert cli(["--db", url, "import", str(path)]) == 0
    with open_store(url) as store:
        # The two identical records of line 4 and 5 stay two conversations.
        assert _counts(store) == (5, 10)
        assert _contents(store) == sorted(m["content"] for r in records for m in r["messages"])


@pytest.mark.parametrize(
    "bad",
    [
        '{"messages": [{"role": "user", "content": "\\ud800"}]}',
        '{"id": "conv-1", "messages": [{"role": "user", "content": "other"}]}',
        '{"messages": [{"role": "user", "content": "x"}], "meta": [[[[[[' + "[" * 200 + "]" * 206 + "]}",
        "not json",
        '{"id": ["a list"], "messages": []}',
        '{"messages": [{"role": "user", "content": "x"}], "note": 1}',
    ],
)
def test_any_bad_line_fails_the_import_before_it_writes(tmp_path: Path, bad: str) -> None:
    """A lone surrogate, a conflicting id, over-deep metadata, broken JSON or a bad id on the last
    line raises a typed error naming that line, and nothing of the file is written."""
    records = [_record(0), _record(1, with_id=True), _record(2), {"messages": [], "note": 1}]
    path = tmp_path / "in.jsonl"
    _write(path, records, {3: bad})
    with open_store(f"sqlite:///{tmp_path / 'chat.db'}") as store:
        if "note" in bad:
            # A valid last line: the control case imports everything.
            with path.open(encoding="utf-8") as stream:
                assert len(import_jsonl(store, stream).imported) == 4
            return
        with path.open(encoding="utf-8") as stream, pytest.raises((ValidationError, ConflictError)) as caught:
            import_jsonl(store, stream)
        assert "line 4" in str(caught.value)
        assert _counts(store) == (0, 0)


def _start_import(url: str, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "chatledger.adapters.cli", "--db", url, "import", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_after(url: str, process: subprocess.Popen[bytes], at_least: int) -> int:
    """SIGKILL ``process`` once ``at_least`` conversations are stored; return how many were."""
    deadline = time.monotonic() + 120
    with open_store(url) as store:
        while time.monotonic() < deadline:
            count = len(store.conversations())
            if count >= at_least or process.poll() is not None:
                break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        return len(store.conversations())


def test_a_sigkilled_import_re_run_stores_every_record_once(tmp_path: Path) -> None:
    """An import of 2,000 id-less records SIGKILLed mid-way, twice, then run to the end, stores
    each record exactly once: 2,000 conversations, 4,000 messages, no duplicate."""
    n = 2000
    url = f"sqlite:///{tmp_path / 'chat.db'}?synchronous=OFF"
    path = tmp_path / "big.jsonl"
    _write(path, [_record(i) for i in range(n)])
    first = _kill_after(url, _start_import(url, path), 150)
    second = _kill_after(url, _start_import(url, path), first + 300)
    assert 0 < first < second < n, (first, second)
    done = subprocess.run(
        [sys.executable, "-m", "chatledger.adapters.cli", "--db", url, "import", "--json", str(path)],
        capture_output=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["imported"] == n - second and result["skipped"] == second
    with open_store(url) as store:
        assert _counts(store) == (n, 2 * n)
        contents = _contents(store)
        assert len(set(contents)) == len(contents) == 2 * n

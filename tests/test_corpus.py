"""Every conversation of the shared corpus imports and exports back JSON-equal to its source."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from chatledger.adapters.openai_format import export_conversation, import_jsonl
from chatledger.store import open_store

from .conftest import CORPUS

FILES = sorted(CORPUS.glob("*.jsonl")) if CORPUS.exists() else []


def test_the_corpus_travels_with_the_repository() -> None:
    """The 404 real conversations the tests use are part of the repository, with their sources."""
    assert (CORPUS / "SOURCES.md").exists()
    assert sum(len(path.read_text(encoding="utf-8").splitlines()) for path in FILES) == 404


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_corpus_round_trips_exactly(path: Path, tmp_path: Path) -> None:
    """Import then export gives back every record JSON-equal: messages, unknown fields, metadata."""
    store = open_store(f"sqlite:///{tmp_path / 'corpus.db'}")
    text = path.read_text(encoding="utf-8")
    sources = [json.loads(line) for line in text.splitlines() if line.strip()]
    result = import_jsonl(store, io.StringIO(text))
    assert len(result.imported) == len(sources)
    for source in sources:
        exported = export_conversation(store, source["id"])
        assert exported == source
        assert json.dumps(exported["messages"], sort_keys=True) == json.dumps(source["messages"], sort_keys=True)
    again = import_jsonl(store, io.StringIO(text))
    assert again.imported == [] and len(again.skipped) == len(sources)
    store.close()


def test_corpus_peculiarities_survive(tmp_path: Path) -> None:
    """Null and list content, reused tool-call ids and the 73 KB message come back unchanged."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    seen = {"null": 0, "list": 0, "big": 0, "nonascii": 0}
    for path in FILES:
        text = path.read_text(encoding="utf-8")
        import_jsonl(store, io.StringIO(text))
        for line in text.splitlines():
            record = json.loads(line)
            stored = store.messages(record["id"])
            for msg, original in zip(stored, record["messages"], strict=True):
                assert msg == original
                content = original.get("content")
                seen["null"] += content is None and "content" in original
                seen["list"] += isinstance(content, list)
                seen["big"] += isinstance(content, str) and len(content) > 70_000
                seen["nonascii"] += isinstance(content, str) and not content.isascii()
    assert seen["null"] > 1000 and seen["list"] >= 40 and seen["big"] >= 1 and seen["nonascii"] >= 100
    store.close()

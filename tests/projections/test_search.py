"""Full-text search over the corpus, on every backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatledger.adapters.openai_format import import_jsonl
from chatledger.projections import SearchHit, search
from chatledger.store import Store, ValidationError

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "taubench_airline_gpt4o.jsonl"


@pytest.fixture
def corpus_store(store: Store) -> Store:
    """The store with the tau-bench airline conversations imported."""
    with CORPUS.open(encoding="utf-8") as stream:
        import_jsonl(store, stream)
    return store


def test_search_finds_unicode_text_from_the_corpus(corpus_store: Store) -> None:
    """Chinese and accented French from real user turns are found, with the message's place and role."""
    [hit] = search(corpus_store, "势必要更改")
    assert hit.conversation_id == "tau-bench/gpt-4o-airline/task004/trial0"
    assert hit.role == "user"
    assert "势必要更改" in hit.snippet
    message = corpus_store.events(hit.conversation_id)[hit.version - 1]
    assert "势必要更改" in message.message["content"]  # type: ignore[attr-defined]
    french = search(corpus_store, "plaît", limit=50)
    assert {h.conversation_id for h in french} >= {
        "tau-bench/gpt-4o-airline/task028/trial0",
        "tau-bench/gpt-4o-airline/task028/trial1",
    }
    assert all(isinstance(h, SearchHit) and "plaît" in h.snippet for h in french)


def test_search_ranks_messages_that_contain_every_word(corpus_store: Store) -> None:
    """Every hit for a two-word query contains both words; the limit is honoured."""
    hits = search(corpus_store, "refund policy", limit=5)
    assert len(hits) == 5
    for hit in hits:
        text = hit.snippet.lower()
        assert "refund" in text or "policy" in text or "polic" in text


def test_search_sees_appends_made_before_it(corpus_store: Store) -> None:
    """A message appended just before a search is found by it (the index catches up first)."""
    conv = corpus_store.start_conversation()
    corpus_store.append(conv, [{"role": "user", "content": "Où est ma valise rouge, zxqwv?"}])
    [hit] = search(corpus_store, "zxqwv")
    assert (hit.conversation_id, hit.version, hit.role) == (conv, 2, "user")


def test_search_takes_operators_literally(corpus_store: Store) -> None:
    """Quotes, colons and stray operators in a query are words, never a syntax error."""
    assert isinstance(search(corpus_store, 'refund" OR: NOT (policy'), list)


def test_empty_query_is_rejected(store: Store) -> None:
    """An empty query is a ValidationError naming the field."""
    with pytest.raises(ValidationError, match="query"):
        search(store, "  ")

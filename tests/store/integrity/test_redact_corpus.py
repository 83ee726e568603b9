"""A corpus of secret shapes (tests/data/secrets/shapes.json) through every write path: with the
default redactor on, no secret's bytes reach any file the store writes.

The shapes follow the rules of real secret scanners (gitleaks, detect-secrets, trufflehog) and
the misses a fault campaign found. The write paths: message content, tool arguments (JSON and
raw), tool results and tool errors recorded by the executor, conversation metadata, fork
metadata, a recorded model response, a subscription's error, and the read models (tool audit,
conversation index, search). The files: the SQLite database, its ``-wal``, the read models.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chatledger.projections import ProjectionRunner, SubscriptionStopped, default_projections, search, tool_audit
from chatledger.store import Draft, Executor, ModelResponseRecorded, Store, fork, open_store
from chatledger.store.backends.recorder import side_stream_id
from chatledger.store.integrity.redaction import DEFAULT_PATTERNS, REDACTED, DefaultRedactor

SHAPES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "data" / "secrets" / "shapes.json").read_text(encoding="utf-8")
)["shapes"]
TEXTS = [s["text"] for s in SHAPES]


def _leaks(directory: Path) -> list[str]:
    """The names of the shapes whose secret (in any of its forms) is in a file under ``directory``."""
    blob = b"".join(p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file())
    return [s["name"] for s in SHAPES if any(form.encode() in blob for form in [s["secret"], *s["also"]])]


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _messages(store: Store) -> None:
    conv = store.start_conversation()
    store.append(conv, [{"role": "user", "content": text} for text in TEXTS])
    store.append(conv, [{"role": "user", "content": [{"type": "text", "text": text}]} for text in TEXTS[:5]])


def _tool_arguments(store: Store) -> None:
    conv = store.start_conversation()
    for i, text in enumerate(TEXTS):
        calls = [_call(f"a{i}", "lookup", json.dumps({"query": text})), _call(f"r{i}", "lookup", text)]
        store.append(
            conv,
            [
                {"role": "assistant", "content": None, "tool_calls": calls},
                {"role": "tool", "tool_call_id": f"a{i}", "content": "ok"},
                {"role": "tool", "tool_call_id": f"r{i}", "content": "ok"},
            ],
        )


def _tool_outcomes(store: Store) -> None:
    def leak(i: int) -> str:
        return TEXTS[i]

    def boom(i: int) -> str:
        raise RuntimeError(TEXTS[i])

    conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])
    executor = Executor(store, {"leak": leak, "boom": boom})
    for i in range(len(TEXTS)):
        args = json.dumps({"i": i})
        executor.execute(conv, {"role": "assistant", "content": None, "tool_calls": [_call(f"l{i}", "leak", args)]})
        executor.execute(conv, {"role": "assistant", "content": None, "tool_calls": [_call(f"b{i}", "boom", args)]})
    tool_audit(store)


def _executed_arguments(store: Store) -> None:
    def lookup(query: str) -> str:
        return "found"

    conv = store.start_conversation(messages=[{"role": "user", "content": "go"}])
    executor = Executor(store, [lookup])
    for i, text in enumerate(TEXTS):
        call = _call(f"q{i}", "lookup", json.dumps({"query": text}))
        (result,) = executor.execute(conv, {"role": "assistant", "content": None, "tool_calls": [call]})
        assert result["content"] == "found"  # the tool ran, with the secret, which was not stored


def _metadata(store: Store) -> None:
    for text in TEXTS:
        store.start_conversation(metadata={"note": text, "token": text.split()[-1]})


def _fork_metadata(store: Store) -> None:
    source = store.start_conversation(messages=[{"role": "user", "content": "hello"}])
    for text in TEXTS:
        fork(store, source, metadata={"note": text, "X-Api-Key": text.split()[-1]})


def _model_response(store: Store) -> None:
    conv = store.start_conversation()
    stream = side_stream_id(conv, "responses")
    with store.transaction() as w:
        w.create_stream(stream, conv, "side")
        w.append(
            stream,
            [
                Draft(ModelResponseRecorded, {"key": f"k{i}", "response": {"content": text}}, key=f"k{i}")
                for i, text in enumerate(TEXTS)
            ],
        )


def _subscription_errors(store: Store) -> None:
    store.start_conversation(messages=[{"role": "user", "content": "an event to fail on"}])
    for i, text in enumerate(TEXTS):

        def handler(event: object, text: str = text) -> None:
            raise ValueError(f"could not call the API with {text}")

        with pytest.raises(SubscriptionStopped):
            store.subscribe(f"sub{i}", handler).run_once()


def _read_models(store: Store) -> None:
    _messages(store)
    _tool_outcomes(store)
    ProjectionRunner(store, default_projections()).catch_up()
    assert search(store, "token") is not None


PATHS: dict[str, Callable[[Store], None]] = {
    "message content": _messages,
    "tool arguments": _tool_arguments,
    "tool results and errors, audit": _tool_outcomes,
    "tool arguments run by the executor": _executed_arguments,
    "conversation metadata": _metadata,
    "fork metadata": _fork_metadata,
    "model response": _model_response,
    "subscription error": _subscription_errors,
    "read models and search": _read_models,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_no_secret_of_the_corpus_reaches_a_file(tmp_path: Path, path: str) -> None:
    """Every secret shape written through this path is redacted before it reaches the database,
    its WAL or a read model (checked with the WAL present and after close)."""
    store = open_store(f"sqlite:///{tmp_path / 'chat.db'}", redactor=True)
    PATHS[path](store)
    assert _leaks(tmp_path) == []
    store.close()
    assert _leaks(tmp_path) == []


def test_every_shape_is_redacted_in_text_and_json() -> None:
    """Each shape's secret is gone from the redacted text; JSON text stays JSON."""
    redactor = DefaultRedactor()
    for shape in SHAPES:
        out = redactor.redact_text(shape["text"])
        assert REDACTED in out, shape["name"]
        assert not any(form in out for form in [shape["secret"], *shape["also"]]), (shape["name"], out)
        if shape["text"].startswith("{"):
            json.loads(out)


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("max_tokens=100 and token_type=bearer", "max_tokens=100 and token_type=bearer"),
        ("the author: Bob, design=flat", "the author: Bob, design=flat"),
        ('{"usage": {"prompt_tokens": 3, "total_tokens": 5}}', '{"usage": {"prompt_tokens": 3, "total_tokens": 5}}'),
        ("see https://example.com/a?page=2&q=rome", "see https://example.com/a?page=2&q=rome"),
    ],
)
def test_ordinary_text_is_kept(text: str, kept: str) -> None:
    """Words that only look like secret names (max_tokens, author, design) and plain URLs are kept."""
    assert DefaultRedactor().redact_text(text) == kept


def test_the_trigger_prefilter_changes_no_result() -> None:
    """Skipping the patterns for text without any of their triggers redacts exactly what
    running every pattern redacts, for every shape of the corpus and its variants."""
    fast = DefaultRedactor()
    full = DefaultRedactor([(name + " (no prefilter)", pattern) for name, pattern in DEFAULT_PATTERNS])
    texts = [*TEXTS, *(t.split()[-1] for t in TEXTS), *(t.upper() for t in TEXTS), *(t.lower() for t in TEXTS)]
    for text in texts:
        assert fast.redact_text(text) == full.redact_text(text), text

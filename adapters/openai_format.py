"""OpenAI chat-format JSONL import and export.

One conversation per line: ``{"id": ..., "messages": [...]}``; every other key
of the line is kept as conversation metadata and written back on export, so a
file round-trips. Import is not execution: recorded transcripts may reuse tool
call ids or end on a tool call, and are stored as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from chatledger.store import ConflictError, ErasedError, Store, ValidationError

__all__ = ["ImportResult", "export_conversation", "export_jsonl", "import_jsonl", "import_record"]


class ImportResult:
    """What an import did: conversations created, skipped as already present, messages stored."""

    def __init__(self) -> None:
        self.imported: list[str] = []
        self.skipped: list[str] = []
        self.messages = 0


def import_record(store: Store, record: Any, line: int = 0) -> tuple[str, bool, int]:
    """Import one conversation record; returns (id, created, message count).

    A record whose conversation already exists with the same messages is
    skipped, so re-running an import is harmless; different messages under an
    existing id are a ConflictError.
    """
    where = f"line {line}" if line else "record"
    if not isinstance(record, dict):
        raise ValidationError(where, "must be a JSON object with 'messages'")
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise ValidationError(f"{where}.messages", "must be a list of chat messages")
    metadata = {k: v for k, v in record.items() if k not in {"id", "messages"}}
    conv_id = record.get("id")
    if conv_id is not None and not isinstance(conv_id, str):
        conv_id = str(conv_id)
    ids = [f"import:{i}" for i in range(len(messages))]
    if conv_id is not None:
        try:
            store.conversation(conv_id)
        except LookupError:
            pass
        else:
            if store.messages(conv_id) != messages:
                raise ConflictError(f"{where}: conversation {conv_id!r} exists with other messages")
            return conv_id, False, 0
    try:
        conv = store.start_conversation(conv_id, metadata=metadata, messages=messages, message_ids=ids)
    except ValidationError as exc:
        raise ValidationError(f"{where}.{exc.field}", exc.problem) from None
    return conv, True, len(messages)


def read_jsonl(stream: IO[str]) -> Iterator[tuple[int, Any]]:
    """Parse JSONL lines, naming the line of any that is not JSON."""
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"line {n}", f"is not JSON: {exc.msg}") from None


def import_jsonl(
    store: Store,
    stream: IO[str],
    progress: Callable[[list[tuple[int, Any]]], Iterable[tuple[int, Any]]] | None = None,
) -> ImportResult:
    """Import every conversation of a JSONL stream (each one atomically).

    ``progress`` may wrap the parsed records (the CLI draws a bar with it).
    """
    result = ImportResult()
    records = list(read_jsonl(stream))
    for n, record in progress(records) if progress is not None else records:
        conv, created, count = import_record(store, record, n)
        (result.imported if created else result.skipped).append(conv)
        result.messages += count
    return result


def export_conversation(store: Store, conversation_id: str) -> dict[str, Any]:
    """One conversation as an import record: ``{"id", "messages", **metadata}``."""
    info = store.conversation(conversation_id)
    record: dict[str, Any] = {"id": conversation_id, "messages": store.messages(conversation_id)}
    for key, value in info.metadata.items():
        record.setdefault(key, value)
    return record


def export_jsonl(store: Store, conversation_ids: Iterable[str], out: IO[str]) -> int:
    """Write conversations as JSONL; returns how many were written (erased conversations are skipped)."""
    count = 0
    for conv in conversation_ids:
        try:
            record = export_conversation(store, conv)
        except ErasedError:
            continue
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count

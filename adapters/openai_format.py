"""OpenAI chat-format JSONL import and export.

One conversation per line: ``{"id": ..., "messages": [...]}``; every other key
of the line is kept as conversation metadata and written back on export, so a
file round-trips. Import is not execution: recorded transcripts may reuse tool
call ids or end on a tool call, and are stored as they are.

An import is checked whole before it writes, and is safe to run again: a record
without ``id`` gets a stable one from a hash of its content (see :func:`import_id`),
and a conversation already stored with the same messages is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, NamedTuple

from chatledger.store import ConflictError, ErasedError, NotFoundError, Store, ValidationError
from chatledger.store.writer import check_id

__all__ = ["ImportResult", "export_conversation", "export_jsonl", "import_id", "import_jsonl", "import_record"]


class ImportResult:
    """What an import did: conversations created, skipped as already present, messages stored."""

    def __init__(self) -> None:
        self.imported: list[str] = []
        self.skipped: list[str] = []
        self.messages = 0


class _Planned(NamedTuple):
    """One checked record of an import: where it came from and what to write."""

    line: int
    conversation_id: str
    metadata: dict[str, Any]
    messages: list[Any]
    exists: bool


def import_id(record: Mapping[str, Any], occurrence: int = 0) -> str:
    """The stable conversation id of a record without ``id``: a hash of its content.

    The ``occurrence``-th identical record of a file (counting from 0) gets its own id,
    so records that repeat stay distinct, and re-running the file (or the file fixed,
    or with lines added) gives every record the id it had before.
    """
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"import-{digest}" if occurrence == 0 else f"import-{digest}-{occurrence}"


def _message_ids(messages: list[Any]) -> list[str | None]:
    return [f"import:{i}" for i in range(len(messages))]


def _plan(store: Store, record: Any, line: int, occurrences: dict[str, int], seen: dict[str, list[Any]]) -> _Planned:
    """Check one record completely, without writing; say whether its conversation exists already.

    Raises:
        ValidationError: naming the line and field.
        ConflictError: the record's id is taken by a conversation with other messages (in the
            store, or earlier in the same file).
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
        conv_id = str(conv_id) if isinstance(conv_id, int | float) and not isinstance(conv_id, bool) else conv_id
    try:
        if conv_id is not None:
            check_id(conv_id, "id")
        store.metadata_text(metadata, "metadata")
        store.check_messages(messages, _message_ids(messages))
    except ValidationError as exc:
        raise ValidationError(f"{where}.{exc.field}", exc.problem) from None
    if conv_id is None:
        # Checked first: the record is JSON within the nesting limit, so it can be hashed.
        key = import_id(record)
        occurrence = occurrences.get(key, 0)
        occurrences[key] = occurrence + 1
        conv_id = import_id(record, occurrence)
    if conv_id in seen:
        if seen[conv_id] != messages:
            raise ConflictError(f"{where}: conversation {conv_id!r} appears earlier in the file with other messages")
        return _Planned(line, conv_id, metadata, messages, True)
    seen[conv_id] = messages
    try:
        store.conversation(conv_id)
    except NotFoundError:
        return _Planned(line, conv_id, metadata, messages, False)
    if store.messages(conv_id) != messages:
        raise ConflictError(f"{where}: conversation {conv_id!r} exists with other messages")
    return _Planned(line, conv_id, metadata, messages, True)


def _write(store: Store, plan: _Planned) -> bool:
    """Create one planned conversation with its messages (atomically); False when it exists already."""
    if plan.exists:
        return False
    try:
        store.start_conversation(
            plan.conversation_id,
            metadata=plan.metadata,
            messages=plan.messages,
            message_ids=_message_ids(plan.messages),
        )
    except ConflictError:
        # Created meanwhile (by a concurrent import of the same file): the same record, or a conflict
        # (also when another tenant holds the id: conversation ids are unique across tenants).
        try:
            same = store.messages(plan.conversation_id) == plan.messages
        except NotFoundError:
            same = False
        if not same:
            raise
        return False
    return True


def import_record(store: Store, record: Any, line: int = 0) -> tuple[str, bool, int]:
    """Import one conversation record; returns (id, created, message count).

    A record without ``id`` gets a stable one (:func:`import_id`). A record whose
    conversation already exists with the same messages is skipped, so re-running an
    import is harmless; different messages under an existing id are a ConflictError.
    """
    plan = _plan(store, record, line, {}, {})
    created = _write(store, plan)
    return plan.conversation_id, created, len(plan.messages) if created else 0


def read_jsonl(stream: IO[str]) -> Iterator[tuple[int, Any]]:
    """Parse JSONL lines, naming the line of any that is not JSON."""
    for n, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise ValidationError(f"line {n}", f"is not JSON: {problem}") from None


def import_jsonl(
    store: Store,
    stream: IO[str],
    progress: Callable[[list[tuple[int, Any]]], Iterable[tuple[int, Any]]] | None = None,
) -> ImportResult:
    """Import every conversation of a JSONL stream, safely re-runnable.

    The whole file is read and checked first (JSON, records, messages, ids, conflicts
    with what is stored); a problem anywhere raises before anything is written. Then
    each conversation is written atomically. Records without ``id`` get stable ids
    (:func:`import_id`), so running the same import again, after it completed, failed
    or was killed at any point, creates only what is missing: never a duplicate
    conversation or message.

    ``progress`` may wrap the records being written (the CLI draws a bar with it).

    Raises:
        ValidationError: a line is not JSON or not a valid record (the line and field are named).
        ConflictError: an id is taken by a conversation with other messages.
    """
    records = list(read_jsonl(stream))
    occurrences: dict[str, int] = {}
    seen: dict[str, list[Any]] = {}
    plans: list[tuple[int, Any]] = []
    for n, record in records:
        plans.append((n, _plan(store, record, n, occurrences, seen)))
    result = ImportResult()
    for _, plan in progress(plans) if progress is not None else plans:
        if _write(store, plan):
            result.imported.append(plan.conversation_id)
            result.messages += len(plan.messages)
        else:
            result.skipped.append(plan.conversation_id)
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

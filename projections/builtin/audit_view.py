"""The tool audit as a materialized projection: :func:`~chatledger.projections.builtin.audit.fold_audit` in a table.

The fold itself lives in :mod:`chatledger.projections.builtin.audit` and is used as is;
this module only gives it a table (``tool_audit``, one row per tool-call stream)
so that the projection runner keeps it up to date, exactly once, beside the
other read models.
"""

from __future__ import annotations

from dataclasses import fields
from typing import ClassVar

from chatledger.projections.builtin.audit import AuditRow, audit_key, fold_audit
from chatledger.projections.tables import Table, Tables
from chatledger.store import Event

__all__ = ["ToolAuditProjection"]


def _column_type(annotation: str) -> str:
    return "int" if annotation == "int" else "float" if annotation.startswith("float") else "str"


TABLE = Table(
    "tool_audit",
    {
        "stream_id": "str",
        **{f.name: _column_type(str(f.type)) for f in fields(AuditRow)},
    },
    pk=("stream_id",),
    indexes=(("conversation_id",), ("status",)),
)


class ToolAuditProjection:
    """Keeps one ``tool_audit`` row per tool call, folded with :func:`fold_audit`."""

    name: ClassVar[str] = "tool_audit"
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[Table, ...]] = (TABLE,)
    types: ClassVar[frozenset[str] | None] = frozenset(
        {
            "tool_call.requested",
            "tool_call.claimed",
            "tool_call.succeeded",
            "tool_call.failed",
            "tool_call.outcome_unknown",
        }
    )

    def apply(self, tables: Tables, event: Event) -> None:
        """Fold a tool-call event into its call's row."""
        key = audit_key(event)
        if key is None:
            return
        stored = tables.get(TABLE.name, key)
        before = None
        if stored is not None:
            stored.pop("stream_id")
            before = AuditRow(**stored)
        after = fold_audit(before, event)
        if after is not None and after != before:
            tables.put(TABLE.name, {"stream_id": key, **after.as_dict()})

"""CLI commands over the tool ledger: ``audit`` (what ran) and ``worker`` (run pending calls)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chatledger.adapters.cli.main import import_spec, store_from_args
from chatledger.adapters.cli.render import print_json, print_table
from chatledger.projections import tool_audit
from chatledger.store import run_worker

__all__ = ["load_tools", "register"]

_COLUMNS = [
    "conversation_id",
    "tool_call_id",
    "tool",
    "status",
    "attempts",
    "worker_id",
    "started_at",
    "duration_ms",
    "outcome",
]


def register(sub: Any) -> None:
    """Add the executor commands to the CLI."""
    p = sub.add_parser("audit", help="list tool executions: tool, arguments, status, result or error")
    p.add_argument("--conversation", default=None, help="only this conversation's calls")
    p.add_argument("--tool", default=None, help="only calls of this tool")
    p.add_argument("--since", default=None, help="only calls requested at or after this ISO time (UTC)")
    p.add_argument("--until", default=None, help="only calls requested before this ISO time (UTC)")
    p.add_argument(
        "--status",
        default=None,
        choices=["requested", "claimed", "retry", "succeeded", "failed", "outcome_unknown"],
        help="only calls in this status",
    )
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(handler=cmd_audit)

    p = sub.add_parser("worker", help="execute pending tool calls until stopped")
    p.add_argument("--tools", required=True, help="module:attr naming a ToolRegistry, list or mapping")
    p.add_argument("--worker-id", default=None, help="recorded on claims and outcomes")
    p.add_argument("--max-calls", type=int, default=None, help="exit after finishing this many calls")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS", help="exit after this long with no work")
    p.add_argument("--lease", type=float, default=30.0, metavar="SECONDS", help="lease length (default 30)")
    p.add_argument("--poll", type=float, default=0.2, metavar="SECONDS", help="poll interval when idle")
    p.add_argument("--max-attempts", type=int, default=1, help="runs of a raising tool before it fails")
    p.set_defaults(handler=cmd_worker)


def load_tools(spec: str) -> Any:
    """Import ``module:attr`` (the tools a worker may run), from the current directory too.

    Raises:
        ValidationError: the spec is malformed or names nothing importable.
    """
    return import_spec(spec, "--tools")


def cmd_audit(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    rows = tool_audit(
        store,
        conversation_id=args.conversation,
        tool=args.tool,
        status=args.status,
        since=args.since,
        until=args.until,
    )
    if args.json:
        print_json([r.as_dict() for r in rows])
        return 0
    table = []
    for r in rows:
        row = r.as_dict()
        row["outcome"] = r.result if r.error is None else f"error: {r.error}"
        row["started_at"] = (r.started_at or "")[:19]
        row["duration_ms"] = "" if r.duration_ms is None else f"{r.duration_ms:.1f}"
        table.append(row)
    print_table(table, _COLUMNS, max_width=40)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    tools = load_tools(args.tools)
    finished = run_worker(
        store,
        tools,
        worker_id=args.worker_id,
        poll_seconds=args.poll,
        max_calls=args.max_calls,
        idle_exit_seconds=args.idle_exit,
        lease_seconds=args.lease,
        max_attempts=args.max_attempts,
    )
    print(f"finished {finished} tool calls", file=sys.stderr)
    return 0

"""CLI commands over the read models: rebuild, search, subscriptions."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from chatledger.adapters.cli.main import store_from_args
from chatledger.adapters.cli.render import print_json, print_table
from chatledger.projections import ProjectionRunner, projection_states, search
from chatledger.store.subscriptions import subscription_states

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the read-model commands to the CLI."""
    p = sub.add_parser("rebuild", help="drop projections and replay the whole log into them")
    p.add_argument("name", nargs="?", default=None, help="one projection (default: all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_rebuild)

    p = sub.add_parser("search", help="full-text search over message contents")
    p.add_argument("query", help="words to find, e.g. 'refund policy'")
    p.add_argument("--limit", type=int, default=20, help="at most this many hits (default 20)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("subscriptions", help="list durable subscriptions and projections with their positions")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_subscriptions)


def _bar(label: str, total: int) -> Callable[[int], None] | None:
    """A progress callback drawing on stderr when it is a terminal; None when piped."""
    if not sys.stderr.isatty():
        return None
    started = time.monotonic()

    def draw(done: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-6)
        if total:
            filled = min(30, int(30 * done / total))
            sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] {done}/~{total} ({rate:,.0f}/s)")
        else:
            sys.stderr.write(f"\r{label} {done} ({rate:,.0f}/s)")
        sys.stderr.flush()

    return draw


def cmd_rebuild(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    runner = ProjectionRunner(store)
    names = [args.name] if args.name else None
    bar = _bar("rebuilding", store.last_position())
    started = time.monotonic()
    events = runner.rebuild(names, bar)
    if bar is not None:
        sys.stderr.write("\n")
    seconds = time.monotonic() - started
    rebuilt = names or [p.name for p in runner.projections]
    result = {"rebuilt": rebuilt, "events": events, "seconds": round(seconds, 3)}
    if args.json:
        print_json(result)
    else:
        print(f"rebuilt {', '.join(rebuilt)} from {events} events in {seconds:.1f} s")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    hits = [
        {"conversation_id": h.conversation_id, "version": h.version, "role": h.role, "snippet": h.snippet}
        for h in search(store, args.query, limit=args.limit)
    ]
    if args.json:
        print_json(hits)
    else:
        print_table(hits, ["conversation_id", "version", "role", "snippet"], max_width=80)
    return 0


def cmd_subscriptions(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    rows = [
        {
            "kind": "subscription",
            "name": s.name,
            "position": s.position,
            "delivered": s.delivered,
            "status": s.status,
            "error": s.error,
            "failed_position": s.failed_position,
            "updated": s.updated_at[:19],
        }
        for s in subscription_states(store)
    ]
    rows += [
        {
            "kind": "projection",
            "name": p.name,
            "position": p.position,
            "delivered": p.events,
            "status": "active",
            "error": None,
            "failed_position": None,
            "updated": p.updated_at[:19],
        }
        for p in projection_states(store)
    ]
    if args.json:
        print_json(rows)
    else:
        shown = [{k: "" if v is None else v for k, v in row.items()} for row in rows]
        print_table(shown, ["kind", "name", "position", "delivered", "status", "error", "updated"])
    return 0

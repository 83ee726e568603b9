"""CLI commands for integrity and security: ``verify`` (hash chains) and ``erase`` (crypto-shredding)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from chatledger.store.crypto import erase
from chatledger.store.verify import heads

from .cli import store_from_args
from .render import print_json, print_table, progress

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the integrity commands to the CLI."""
    p = sub.add_parser(
        "verify",
        help="check the hash chains (exit 1 when any is broken)",
        description="Recompute every stream's hash chain and compare it with what is stored. "
        "The signing key is read from $CHATLEDGER_SIGNING_KEY.",
    )
    p.add_argument("id", nargs="?", default=None, help="only this conversation (default: all)")
    p.add_argument(
        "--heads", action="store_true", help="print each conversation's head hash and version (to keep elsewhere)"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser(
        "erase",
        help="destroy a conversation's encryption key (its events stay, unreadable)",
        description="Needs encryption at rest ($CHATLEDGER_MASTER_KEY). Cannot be undone.",
    )
    p.add_argument("id", help="conversation id")
    p.add_argument("--yes", action="store_true", help="confirm: the conversation can never be read again")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_erase)


def _bar(stream_ids: Sequence[str]) -> Iterable[str]:
    return progress(stream_ids, len(stream_ids), "verifying")


def cmd_verify(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    if args.heads:
        rows = [{"id": c, "head_hash": h, "version": v} for c, h, v in heads(store)]
        if args.id is not None:
            store.conversation(args.id)
            rows = [r for r in rows if r["id"] == args.id]
        if args.json:
            print_json(rows)
        else:
            print_table(rows, ["id", "version", "head_hash"], max_width=80)
        return 0
    report = store.verify(args.id, progress=_bar)
    if args.json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            print(f"BROKEN {problem.describe()}")
        state = "ok" if report.ok else f"{len(report.problems)} broken"
        signed = "signed" if report.signed else "unsigned"
        print(f"{state}: {report.streams} streams, {report.events} events checked ({signed} chains)")
    return 0 if report.ok else 1


def cmd_erase(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    if not args.yes:
        print("chatledger: error: erase cannot be undone; pass --yes to confirm")
        return 2
    destroyed = erase(store, args.id)
    if args.json:
        print_json({"id": args.id, "erased": True, "key_destroyed": destroyed})
    else:
        print(f"erased {args.id}" + ("" if destroyed else " (it had no data key)"))
    return 0

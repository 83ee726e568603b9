"""CLI commands for integrity and security: ``verify`` (hash chains) and ``erase`` (crypto-shredding)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from chatledger.adapters.cli.main import store_from_args
from chatledger.adapters.cli.render import print_json, print_table, progress
from chatledger.store.backends.recorder import CALL_SEPARATOR
from chatledger.store.errors import ErasureNotCertain, ValidationError
from chatledger.store.integrity.crypto import erase
from chatledger.store.integrity.verify import heads, verify

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the integrity commands to the CLI."""
    p = sub.add_parser(
        "verify",
        help="check the hash chains (exit 1 when any is broken)",
        description="Recompute every stream's hash chain and compare it with what is stored. "
        "The signing key is read from $CHATLEDGER_SIGNING_KEY. "
        "Keep the output of --heads --json elsewhere and pass it back with --against: "
        "a conversation deleted, cut short or rewritten since then is reported too.",
    )
    p.add_argument("id", nargs="?", default=None, help="only this conversation (default: all)")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--heads", action="store_true", help="print each conversation's head hash and version (to keep elsewhere)"
    )
    what.add_argument(
        "--against",
        metavar="FILE",
        default=None,
        help="also compare with heads kept earlier (the JSON that verify --heads --json printed)",
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
            rows = [r for r in rows if str(r["id"]).split(CALL_SEPARATOR, 1)[0] == args.id]
        if args.json:
            print_json(rows)
        else:
            print_table(rows, ["id", "version", "head_hash"], max_width=80)
        return 0
    kept = None if args.against is None else read_kept(args.against)
    report = verify(store, args.id, progress=_bar, kept=kept)
    if args.json:
        print_json(report.to_dict())
    else:
        for problem in report.problems:
            print(f"BROKEN {problem.describe()}")
        state = "ok" if report.ok else f"{len(report.problems)} broken"
        signed = "signed" if report.signed else "unsigned"
        against = "" if kept is None else f", {report.kept} kept heads compared"
        print(f"{state}: {report.streams} streams, {report.events} events checked ({signed} chains){against}")
    return 0 if report.ok else 1


def read_kept(path: str) -> list[tuple[str, str, int]]:
    """The heads in a file written from ``chatledger verify --heads --json``.

    Raises:
        ValidationError: the file cannot be read or is not a list of ``{"id", "head_hash", "version"}``.
    """
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError("--against", f"cannot read {path}: {exc}") from None
    kept = []
    for row in rows if isinstance(rows, list) else [rows]:
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("id"), str)
            or not isinstance(row.get("head_hash"), str)
            or type(row.get("version")) is not int
        ):
            raise ValidationError(
                "--against", f"{path} is not the JSON of `chatledger verify --heads --json` (at {row!r:.80})"
            )
        kept.append((row["id"], row["head_hash"], row["version"]))
    return kept


def cmd_erase(args: argparse.Namespace) -> int:
    """Erase one conversation; exit 3 when its key is destroyed but a copy may remain in a file for now."""
    store = store_from_args(args)
    if not args.yes:
        print("chatledger: error: erase cannot be undone; pass --yes to confirm")
        return 2
    try:
        destroyed = erase(store, args.id)
    except ErasureNotCertain as exc:
        # The key is destroyed; only the purge of its old bytes is pending: exit 3, not 1.
        if args.json:
            print_json({"id": args.id, "erased": True, "certain": False, "reason": exc.reason})
        else:
            print(f"erased {args.id}, not yet certain: {exc.reason}; run `chatledger erase {args.id} --yes` again")
        return 3
    if args.json:
        print_json({"id": args.id, "erased": True, "key_destroyed": destroyed, "certain": True})
    else:
        print(f"erased {args.id}" + ("" if destroyed else " (it had no data key)"))
    return 0

"""CLI commands over the log itself: import, export, show, conversations."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from chatledger.adapters.cli.main import store_from_args
from chatledger.adapters.cli.render import print_json, print_table, progress
from chatledger.adapters.openai_format import export_jsonl, import_jsonl
from chatledger.store import ValidationError

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the log commands to the CLI."""
    p = sub.add_parser("import", help="import conversations from an OpenAI-format JSONL file")
    p.add_argument("file", help="JSONL file, one {'id', 'messages', ...} per line ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("export", help="export conversations as OpenAI-format JSONL")
    p.add_argument("ids", nargs="*", help="conversation ids (default: all)")
    p.add_argument("-o", "--output", default="-", help="output file (default: stdout)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("show", help="show one conversation's chat")
    p.add_argument("id", help="conversation id")
    p.add_argument("--as-of", type=int, default=None, help="show the conversation as of this version")
    p.add_argument("--format", choices=["text", "openai", "json"], default="text", help="output format")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        metavar="TOKENS",
        help="show only the window a model would get within this many tokens (estimated)",
    )
    p.add_argument("--window-messages", type=int, default=None, metavar="N", help="window of at most N messages")
    p.add_argument("--keep-first-user", action="store_true", help="keep the first user message in the window")
    p.set_defaults(handler=cmd_show)

    p = sub.add_parser("conversations", help="list conversations (from the conversation index)")
    p.add_argument("--limit", type=int, default=None, help="at most this many")
    p.add_argument(
        "--status",
        choices=["empty", "awaiting_reply", "awaiting_tools", "answered"],
        default=None,
        help="only conversations in this state",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="only conversations whose metadata KEY equals VALUE (JSON or text; repeatable)",
    )
    p.add_argument("--since", default=None, help="only conversations active since this ISO time (UTC)")
    p.add_argument(
        "--order",
        choices=["created_at", "last_activity", "messages", "tool_calls"],
        default="created_at",
        help="sort key (default: created_at, oldest first; the others newest or largest first)",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=cmd_conversations)


def cmd_import(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    try:
        stream = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        raise ValidationError("file", str(exc)) from None
    with stream:
        done = import_jsonl(store, stream, lambda records: progress(records, len(records), "importing"))
    imported, skipped = len(done.imported), len(done.skipped)
    messages = done.messages
    result = {"imported": imported, "skipped": skipped, "messages": messages}
    if args.json:
        print_json(result)
    else:
        print(f"imported {imported} conversations ({messages} messages), skipped {skipped} already present")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    ids = args.ids or [c.conversation_id for c in store.conversations()]
    if args.output == "-":
        export_jsonl(store, progress(ids, len(ids), "exporting"), sys.stdout)
    else:
        with open(args.output, "w", encoding="utf-8") as out:
            count = export_jsonl(store, progress(ids, len(ids), "exporting"), out)
        print(f"exported {count} conversations to {args.output}", file=sys.stderr)
    return 0


def render_message(msg: dict[str, Any]) -> str:
    """One message as readable text: role, name, content, tool calls."""
    role = str(msg.get("role"))
    head = f"[{role}{' ' + str(msg['name']) if msg.get('name') else ''}]"
    if role == "tool":
        head = f"[tool result {msg.get('tool_call_id')}]"
    content = msg.get("content")
    text = content if isinstance(content, str) else "" if content is None else json.dumps(content)
    lines = [f"{head} {text}".rstrip()]
    for call in msg.get("tool_calls") or []:
        fn = call.get("function", {})
        lines.append(f"    -> {fn.get('name')}({fn.get('arguments')})  id={call.get('id')}")
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    fmt = "json" if args.json else args.format
    if args.window is not None or args.window_messages is not None:
        from chatledger.store.window import window

        messages = window(
            store,
            args.id,
            max_tokens=args.window,
            max_messages=args.window_messages,
            keep_first_user=args.keep_first_user,
            as_of=args.as_of,
            allow_pending=True,
        ).messages
    else:
        messages = store.messages(args.id, args.as_of)
    if fmt == "openai":
        print(json.dumps(messages, ensure_ascii=False))
    elif fmt == "json":
        info = store.conversation(args.id)
        print_json({"id": args.id, "version": info.version, "metadata": info.metadata, "messages": messages})
    else:
        for msg in messages:
            print(render_message(msg))
    return 0


def cmd_conversations(args: argparse.Namespace) -> int:
    from chatledger.projections import conversation_index

    store = store_from_args(args)
    where = _where(args.where)
    entries = conversation_index(store, status=args.status, order_by=args.order, desc=args.order != "created_at")
    rows = [
        {
            "id": e.conversation_id,
            "version": e.version,
            "messages": e.messages,
            "tool_calls": e.tool_calls,
            "status": e.status,
            "created": e.created_at[:19],
            "last_activity": e.last_activity[:19],
            "title": e.title,
            "metadata": e.metadata,
        }
        for e in entries
        if (args.since is None or e.last_activity >= args.since)
        and all(e.metadata.get(k, _MISSING) == v for k, v in where.items())
    ][: args.limit]
    if args.json:
        print_json(rows)
    else:
        print_table(rows, ["id", "messages", "tool_calls", "status", "last_activity", "title"])
    return 0


_MISSING = object()


def _where(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` filters; a VALUE that parses as JSON is compared as that value."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError("--where", f"must look like KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out

"""CLI commands for replay and fork: re-drive a record without running anything, branch a conversation."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from chatledger.adapters.cli.main import import_spec, store_from_args
from chatledger.adapters.cli.render import print_json
from chatledger.store import fork
from chatledger.store.tools.replay import replay_log

__all__ = ["load_attr", "register"]


def register(sub: Any) -> None:
    """Add the replay and fork commands to the CLI."""
    p = sub.add_parser(
        "replay",
        help="replay a conversation from the record: no tool runs, no model calls (exit 1 on divergence)",
    )
    p.add_argument("id", help="conversation id")
    p.add_argument(
        "--agent",
        metavar="MODULE:ATTR",
        default=None,
        help="an AgentChat build function (session -> agent or team) to re-drive with new agents; "
        "without it the tool calls are replayed against the ledger",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=cmd_replay)

    p = sub.add_parser("fork", help="fork a conversation at a version (tools before it are not re-run)")
    p.add_argument("id", help="conversation id")
    p.add_argument("--at", type=int, required=True, help="the last version of the source to include")
    p.add_argument("--new-id", default=None, help="the fork's id (default: a new one)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=cmd_fork)


def load_attr(spec: str, what: str) -> Any:
    """Import ``module:attr`` (e.g. ``myapp.agents:build``), from the current directory too."""
    return import_spec(spec, what)


def cmd_replay(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    if args.agent:
        from chatledger.adapters.agentchat import replay

        report = asyncio.run(replay(store, args.id, load_attr(args.agent, "--agent")))
        result = {
            "conversation": args.id,
            "mode": "agents",
            "requests": report.requests,
            "messages": report.messages,
            "model_answers_from_record": report.model_calls,
            "tool_results_from_record": report.tool_calls,
            "model_calls": 0,
            "tools_run": 0,
        }
    else:
        log_report = replay_log(store, args.id)
        result = {
            "conversation": args.id,
            "mode": "ledger",
            "messages": log_report.messages,
            "tool_results_from_record": log_report.tool_calls,
            "tools_run": 0,
        }
    if args.json:
        print_json(result)
    else:
        print(
            f"replayed {args.id}: {result['messages']} messages identical, "
            f"{result['tool_results_from_record']} tool results from the record, 0 tools run"
            + (", 0 model calls" if args.agent else "")
        )
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    store = store_from_args(args)
    new_id = fork(store, args.id, args.at, new_id=args.new_id)
    if args.json:
        print_json({"fork": new_id, "source": args.id, "at": args.at, "version": store.version(new_id)})
    else:
        print(new_id)
    return 0

"""The ``chatledger demo`` command: the main job in one command (see :mod:`chatledger.adapters.demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from chatledger.adapters.cli.render import print_json
from chatledger.store.url import resolve_url

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the demo command to the CLI."""
    p = sub.add_parser(
        "demo",
        help="an offline AgentChat conversation with two tools: scaling failures, history, audit, replay, verify",
    )
    p.add_argument(
        "--model",
        default=None,
        help="run against this OpenAI model (needs OPENAI_API_KEY and chatledger[openai]); default: scripted",
    )
    p.add_argument("--json", action="store_true", help="print only a JSON summary of what was counted")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from chatledger.adapters.demo import run_demo

    result = run_demo(resolve_url(args.db), args.model, say=(lambda _line: None) if args.json else print)
    if args.json:
        print_json(result.as_dict())
    ok = result.verified and result.replay_identical and result.replay_tool_runs == 0
    ok = ok and all(result.executions[n] == result.distinct_calls[n] for n in result.distinct_calls)
    return 0 if ok else 1

"""The ``chatledger`` command line: a thin layer over the public Python API.

Each command parses its flags, calls one public function and renders the
result as a table (default) or JSON (``--json``). Errors are one line on
stderr: exit 2 for usage errors, 1 for failures. The store comes from
``--db URL``, else ``$CHATLEDGER_URL``, else ``sqlite:///chatledger.db``.

Commands live in the small modules of this package, each with a ``register(subparsers)``
function; this module wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from chatledger.store import ChatledgerError, Store, ValidationError, open_store

__all__ = ["build_parser", "import_spec", "main", "store_from_args"]

Handler = Callable[[argparse.Namespace], int]


def store_from_args(args: argparse.Namespace) -> Store:
    """Open the store named by ``--db`` (or the environment), for ``--tenant``; :func:`main` closes it
    when the command returns."""
    store = open_store(args.db, tenant=args.tenant)
    opened: list[Store] = args.__dict__.setdefault("_opened_stores", [])
    opened.append(store)
    return store


def import_spec(spec: str, what: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted), from the current directory too.

    The ``chatledger`` console script does not put the current directory on the
    import path the way ``python -m`` does, so ``--agent myapp:build`` run from the
    application's own directory could not find ``myapp``; it is added here (first,
    as ``python -m`` does) before importing.

    Raises:
        ValidationError: naming the flag, when the spec is malformed or names nothing importable.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValidationError(what, f"must look like module:attr, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        value: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError) as exc:
        raise ValidationError(what, f"cannot load {spec!r}: {exc}") from None
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every command registered."""
    parser = argparse.ArgumentParser(
        prog="chatledger",
        description="An event-sourced conversation store for AutoGen agents.",
    )
    parser.add_argument("--db", default=None, help="store URL (default: $CHATLEDGER_URL or sqlite:///chatledger.db)")
    parser.add_argument("--tenant", default="default", help="tenant to act for (default: default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"chatledger.adapters.cli.{name}").register(sub)
    return parser


# The command modules, in help order; each has a register(subparsers) function.
_COMMANDS: tuple[str, ...] = ("demo", "log", "executor", "replay", "integrity", "projections")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return handler(args)
    except ChatledgerError as exc:
        print(f"chatledger: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        for store in getattr(args, "_opened_stores", ()):
            store.close()

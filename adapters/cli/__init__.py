"""The ``chatledger`` command line: one module per group of commands, wired in :mod:`.main`."""

from chatledger.adapters.cli.main import build_parser, main, store_from_args

__all__ = ["build_parser", "main", "store_from_args"]

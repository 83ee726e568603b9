"""The fault suite: each test injects the fault a guarantee claims to survive.

Every test collected under ``tests/faults/`` carries the ``faults`` marker, so the
suite runs alone with ``pytest -m faults`` (and CI runs it). docs/faults.md lists
each fault injected and the guarantee it checks.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder as a fault test."""
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)

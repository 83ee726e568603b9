"""What a process holds open: counted from ``/proc/self/fd`` (Linux)."""

from __future__ import annotations

import os
from pathlib import Path

HAS_PROC = Path("/proc/self/fd").is_dir()


def open_files(path: Path | str) -> int:
    """How many of this process's file descriptors are open on ``path`` or a file named after it
    (a SQLite file's ``-wal`` and ``-shm``)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(path))
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return count

"""Where the reading commands (report, export) write: refused in one line before the work."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cannot_write"]


def cannot_write(path: Path) -> str | None:
    """Why ``path`` cannot be written by this process (``a read-only file system``,
    ``permission denied``), or None when it can.

    Looks at the file if it exists, else at its closest existing directory (which the
    writer creates the rest of).
    """
    directory = path.parent
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    target = path if path.exists() else directory
    if os.access(target, os.W_OK) and os.access(directory, os.W_OK | os.X_OK):
        return None
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "a read-only file system" if read_only else "permission denied"

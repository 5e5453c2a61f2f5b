"""Errors said in words: one line for a failed job, and whether an error means a full or
unwritable disk (so a page or the CLI can say so rather than blame the database)."""
from __future__ import annotations

import errno
import sqlite3

DISK_FULL_HINTS = ("database or disk is full", "no space left", "disk i/o error", "readonly database",
                   "read-only file system")


def is_disk_full(e: BaseException) -> bool:
    """An OSError or sqlite error that means the disk is full or cannot be written."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        return True
    return isinstance(e, sqlite3.OperationalError) and any(h in str(e).lower() for h in DISK_FULL_HINTS)


def describe_failure(e: BaseException) -> str:
    """One line for a failed job; a full disk or an I/O error says so in words."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the workspace's disk ({e.strerror or e}{': ' + str(e.filename) if e.filename else ''})"
    if isinstance(e, OSError) and e.errno in (errno.EIO, errno.EROFS):
        return f"the workspace's disk could not be written ({e.strerror or e})"
    if isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e):
        return f"no space left on the workspace's disk (the job database: {e})"
    return f"{type(e).__name__}: {e}".strip()

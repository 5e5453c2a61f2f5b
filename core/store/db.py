"""The workspace's SQLite file: WAL (several processes read while one writes), one connection per
call (so objects can be shared by threads), and write transactions that take the lock up front."""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path


class ChangeWatch:
    """A token that changes whenever anyone (any process) commits to the database file.

    `PRAGMA data_version` on one long-lived connection that never writes changes exactly when
    another connection commits, and costs microseconds; the file's device and inode are added so
    that a database replaced on disk (a repair, a test) is noticed too, and its size and mtime so
    that a file truncated or rewritten in place is. None when the file cannot be read: a caller
    then reads the database directly and gets its own error. Thread-safe."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None

    def token(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        with self._lock:
            try:
                if self._conn is None or self._file != (st.st_dev, st.st_ino):
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                    self._file = (st.st_dev, st.st_ino)
                changes = self._conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                self._conn = None
                return None
            return (*self._file, st.st_size, st.st_mtime_ns, changes)


class Database:
    def __init__(self, path: Path):
        self.path = path
        self._watch = ChangeWatch(path)

    def change_token(self) -> tuple[int, ...] | None:
        """Equal tokens: nothing was committed to the file in between (see ChangeWatch)."""
        return self._watch.token()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no upgrade deadlocks): everything
        inside it is one atomic step, committed on exit, rolled back on any exception."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def columns(self, table: str) -> set[str]:
        with self.read() as conn:
            return {r["name"] for r in conn.execute(f"PRAGMA table_info({table})")}

"""Hostile conditions several test files build: a decompression bomb made without holding its
bytes, and a workspace disk that is full (every write refused as SQLite and the OS refuse it)."""
from __future__ import annotations

import errno
import sqlite3
import zlib

MB = 1 << 20


def zeros_zlib(n: int, chunk: int = MB) -> bytes:
    """A valid zlib stream of `n` zero bytes, built without holding them: ~1 KB per MB."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(chunk)) + c.flush(zlib.Z_FULL_FLUSH)  # identical for every chunk
    q, r = divmod(n, chunk)
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    adler, zero = 1, bytes(chunk)
    for _ in range(q):
        adler = zlib.adler32(zero, adler)
    adler = zlib.adler32(bytes(r), adler)
    return b"\x78\xda" + block * q + c2.compress(bytes(r)) + c2.flush() + adler.to_bytes(4, "big")


def fill_the_disk(monkeypatch) -> None:
    """From now on the workspace's database and files cannot be written: a full disk."""
    from core.store import workspace as workspace_mod
    from core.store.db import Database

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Database, "write", full)
    monkeypatch.setattr(workspace_mod, "write_temp", no_space)
    monkeypatch.setattr(workspace_mod, "atomic_write", no_space)

"""The workspace: variants and jobs in an SQLite index (WAL, safe for several processes at once)
plus artifact files under one directory.

A variant's weights file is written under a temporary name and renamed into place before its row
is inserted, so a reader never sees a variant whose file is half written, and a process killed
mid-save leaves at most a stray temp file that the next open removes.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from . import formats
from .models import build_from_arch

BASELINES_DIR = Path(__file__).resolve().parent.parent / "baselines"
KIND_FLAGS = ("masked", "shrunk", "quantized", "simulated")

SCHEMA = """
CREATE TABLE IF NOT EXISTS variants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    parent_id TEXT,
    dataset TEXT NOT NULL,
    arch TEXT NOT NULL,
    recipe TEXT NOT NULL,
    metrics TEXT NOT NULL,
    kind TEXT NOT NULL,
    weights_file TEXT NOT NULL,
    format TEXT NOT NULL,
    origin TEXT,
    notes TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS variants_parent ON variants(parent_id);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    device TEXT,
    pid INTEGER,
    pid_start TEXT,
    variant_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    log TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS job_events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    t REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""

JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_JOB_STATES = ("done", "failed", "cancelled", "interrupted")
LOG_TAIL_CHARS = 20_000


class VariantNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "variant not found"


class VariantHasChildren(RuntimeError):
    """Deleting would orphan children; pass cascade=True or reparent=True."""


def workspace_dir(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("WORKBENCH_HOME") or "workspace")


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def empty_kind() -> dict[str, bool]:
    return {k: False for k in KIND_FLAGS}


@dataclass
class Variant:
    id: str
    name: str
    parent_id: str | None
    dataset: str
    arch: dict
    recipe: list[dict]
    metrics: dict
    kind: dict
    weights_file: str
    format: str
    origin: str | None = None
    notes: str = ""
    created_at: float = field(default_factory=time.time)

    @property
    def kind_label(self) -> str:
        flags = [k for k in KIND_FLAGS if self.kind.get(k)]
        return "+".join(flags) if flags else "dense"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Job:
    id: str
    kind: str
    title: str
    config: dict
    state: str
    progress: float
    message: str
    error: str | None
    device: str | None
    pid: int | None
    pid_start: str | None
    variant_id: str | None
    cancel_requested: bool
    log: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_JOB_STATES

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or time.time()) - self.started_at

    def to_dict(self) -> dict:
        return asdict(self)


def _variant_from_row(r: sqlite3.Row) -> Variant:
    return Variant(id=r["id"], name=r["name"], parent_id=r["parent_id"], dataset=r["dataset"],
                   arch=json.loads(r["arch"]), recipe=json.loads(r["recipe"]), metrics=json.loads(r["metrics"]),
                   kind=json.loads(r["kind"]), weights_file=r["weights_file"], format=r["format"],
                   origin=r["origin"], notes=r["notes"], created_at=r["created_at"])


def _job_from_row(r: sqlite3.Row) -> Job:
    d = dict(r)
    d["config"] = json.loads(d["config"])
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


class Workspace:
    """Open (and create) a workspace directory. Cheap: every call opens its own connection, so a
    Workspace can be shared by threads, and several processes can use the same directory."""

    def __init__(self, root: str | os.PathLike | None = None, *, seed_baselines: bool = True):
        self.root = workspace_dir(root).resolve()
        self.db_path = self.root / "workbench.db"
        self.variants_dir = self.root / "variants"
        self.jobs_dir = self.root / "jobs"
        for d in (self.root, self.variants_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        self._remove_stray_temp_files()
        if seed_baselines:
            self.seed_baselines()

    # ------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock up front (no upgrade deadlocks)."""
        conn = self._connect()
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

    def _remove_stray_temp_files(self) -> None:
        # temp files older than an hour can only be left by a killed writer
        cutoff = time.time() - 3600
        for p in self.variants_dir.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    # ------------------------------------------------------------ variants

    def add_variant(self, model_or_state: nn.Module | dict, *, name: str, dataset: str, arch: dict, recipe: list[dict],
                    metrics: dict, kind: dict | None = None, parent_id: str | None = None, origin: str | None = None,
                    notes: str = "", variant_id: str | None = None, weights: bytes | None = None,
                    fmt: str | None = None) -> Variant:
        """Store a variant: its weights in the best honest format (or the given `weights` bytes)
        and its row. `metrics["size_bytes"]` is set to the length of the file actually written."""
        if parent_id is not None:
            self.get_variant(parent_id)  # raises VariantNotFound
        vid = variant_id or uuid.uuid4().hex[:8]
        kind = {**empty_kind(), **(kind or {})}
        meta = {"name": name, "dataset": dataset, "arch": json.dumps(arch)}
        if weights is None:
            state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
            weights, fmt = formats.encode_best(state, meta)
        rel = f"variants/{vid}/weights.safetensors"
        atomic_write(self.root / rel, weights)
        metrics = {**metrics, "size_bytes": len(weights)}
        v = Variant(vid, name, parent_id, dataset, arch, recipe, metrics, kind, rel, fmt or "dense", origin, notes)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO variants (id, name, parent_id, dataset, arch, recipe, metrics, kind, weights_file, format,"
                " origin, notes, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (v.id, v.name, v.parent_id, v.dataset, json.dumps(arch), json.dumps(recipe), json.dumps(metrics),
                 json.dumps(kind), rel, v.format, origin, notes, v.created_at))
        return v

    def get_variant(self, ref: str) -> Variant:
        """By id, unique id prefix, or unique name."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM variants WHERE id = ?", (ref,)).fetchone()
            if row is None:
                rows = conn.execute("SELECT * FROM variants WHERE id LIKE ? OR name = ?",
                                    (ref.replace("%", "") + "%", ref)).fetchall()
                if len(rows) > 1:
                    raise VariantNotFound(f"{ref!r} matches {len(rows)} variants; use the id")
                row = rows[0] if rows else None
        if row is None:
            raise VariantNotFound(f"no variant {ref!r} in workspace {self.root}")
        return _variant_from_row(row)

    def list_variants(self, dataset: str | None = None) -> list[Variant]:
        with self._read() as conn:
            if dataset:
                rows = conn.execute("SELECT * FROM variants WHERE dataset = ? ORDER BY created_at", (dataset,))
            else:
                rows = conn.execute("SELECT * FROM variants ORDER BY created_at")
            return [_variant_from_row(r) for r in rows.fetchall()]

    def children(self, variant_id: str) -> list[Variant]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM variants WHERE parent_id = ? ORDER BY created_at", (variant_id,))
            return [_variant_from_row(r) for r in rows.fetchall()]

    def lineage(self, variant_id: str) -> list[Variant]:
        """The variant and its ancestors, root first."""
        chain, seen = [], set()
        v: Variant | None = self.get_variant(variant_id)
        while v is not None and v.id not in seen:
            chain.append(v)
            seen.add(v.id)
            v = self.get_variant(v.parent_id) if v.parent_id else None
        return chain[::-1]

    def descendants(self, variant_id: str) -> list[Variant]:
        out, frontier = [], [variant_id]
        while frontier:
            kids = self.children(frontier.pop())
            out.extend(kids)
            frontier.extend(k.id for k in kids)
        return out

    def weights_path(self, variant: Variant | str) -> Path:
        v = variant if isinstance(variant, Variant) else self.get_variant(variant)
        return self.root / v.weights_file

    def load_state(self, variant: Variant | str) -> dict[str, torch.Tensor]:
        state, _ = formats.load_file(self.weights_path(variant))
        return state

    def load_model(self, variant: Variant | str) -> nn.Module:
        """A fresh module (CPU, eval mode) with the variant's weights."""
        v = variant if isinstance(variant, Variant) else self.get_variant(variant)
        return build_from_arch(v.arch, self.load_state(v)).eval()

    def update_variant(self, variant_id: str, *, name: str | None = None, metrics: dict | None = None,
                       notes: str | None = None) -> Variant:
        v = self.get_variant(variant_id)
        with self._write() as conn:
            if name is not None:
                conn.execute("UPDATE variants SET name = ? WHERE id = ?", (name, v.id))
            if metrics is not None:
                conn.execute("UPDATE variants SET metrics = ? WHERE id = ?", (json.dumps({**v.metrics, **metrics}), v.id))
            if notes is not None:
                conn.execute("UPDATE variants SET notes = ? WHERE id = ?", (notes, v.id))
        return self.get_variant(v.id)

    def delete_variant(self, variant_id: str, *, cascade: bool = False, reparent: bool = False) -> list[str]:
        """Delete a variant. With children, refuse unless `cascade` (delete the whole subtree) or
        `reparent` (children move to this variant's parent). Returns the deleted ids."""
        v = self.get_variant(variant_id)
        kids = self.children(v.id)
        if kids and not (cascade or reparent):
            names = ", ".join(f"{k.name} ({k.id})" for k in kids)
            raise VariantHasChildren(f"{v.name} ({v.id}) has {len(kids)} child variant(s): {names}. "
                                     "Delete with cascade (the whole subtree) or reparent (children move up).")
        doomed = [v.id] + ([d.id for d in self.descendants(v.id)] if cascade else [])
        with self._write() as conn:
            if reparent:
                conn.execute("UPDATE variants SET parent_id = ? WHERE parent_id = ?", (v.parent_id, v.id))
            conn.executemany("DELETE FROM variants WHERE id = ?", [(i,) for i in doomed])
        for i in doomed:
            shutil.rmtree(self.variants_dir / i, ignore_errors=True)
        return doomed

    # ------------------------------------------------------------ shipped baselines

    def seed_baselines(self, directory: Path = BASELINES_DIR) -> list[Variant]:
        """Import every shipped baseline (`baselines/*.safetensors`) not yet in this workspace."""
        added = []
        for path in sorted(directory.glob("*.safetensors")):
            origin = f"baseline:{path.stem}"
            with self._read() as conn:
                if conn.execute("SELECT 1 FROM variants WHERE origin = ?", (origin,)).fetchone():
                    continue
            data = path.read_bytes()
            meta = formats.read_metadata(data)
            info = json.loads(meta["variant"])
            vid = f"base-{path.stem}"
            try:
                added.append(self.add_variant(
                    {}, name=info["name"], dataset=info["dataset"], arch=info["arch"], recipe=info["recipe"],
                    metrics=info["metrics"], kind=info.get("kind"), origin=origin, notes=info.get("notes", ""),
                    variant_id=vid, weights=data, fmt=meta.get(formats.FORMAT_KEY, "dense")))
            except sqlite3.IntegrityError:
                pass  # another process seeded it at the same moment
        return added

    # ------------------------------------------------------------ jobs (state; the runner is core.jobs)

    def create_job(self, kind: str, config: dict, title: str = "") -> Job:
        jid = uuid.uuid4().hex[:10]
        with self._write() as conn:
            conn.execute("INSERT INTO jobs (id, kind, title, config, state, created_at) VALUES (?,?,?,?,?,?)",
                         (jid, kind, title, json.dumps(config), "queued", time.time()))
        return self.get_job(jid)

    def get_job(self, job_id: str) -> Job:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id!r}")
        return _job_from_row(row)

    def list_jobs(self, states: tuple[str, ...] | None = None, limit: int = 200) -> list[Job]:
        with self._read() as conn:
            if states:
                q = f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY created_at DESC LIMIT ?"
                rows = conn.execute(q, (*states, limit))
            else:
                rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
            return [_job_from_row(r) for r in rows.fetchall()]

    def update_job(self, job_id: str, *, only_if_state: tuple[str, ...] | None = None, **fields_) -> bool:
        """Set columns of a job; with `only_if_state`, only when its state is one of those.
        Returns whether a row changed (a compare-and-set for state transitions)."""
        if not fields_:
            return False
        if "config" in fields_:
            fields_["config"] = json.dumps(fields_["config"])
        cols = ", ".join(f"{k} = ?" for k in fields_)
        q = f"UPDATE jobs SET {cols} WHERE id = ?"
        args = [*fields_.values(), job_id]
        if only_if_state:
            q += f" AND state IN ({','.join('?' * len(only_if_state))})"
            args += list(only_if_state)
        with self._write() as conn:
            return conn.execute(q, args).rowcount > 0

    def append_job_log(self, job_id: str, text: str) -> None:
        with self._write() as conn:
            conn.execute("UPDATE jobs SET log = substr(log || ?, -?) WHERE id = ?", (text, LOG_TAIL_CHARS, job_id))

    def add_job_events(self, job_id: str, events: list[dict]) -> None:
        if not events:
            return
        with self._write() as conn:
            start = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?", (job_id,)).fetchone()[0]
            now = time.time()
            conn.executemany("INSERT INTO job_events (job_id, seq, t, data) VALUES (?,?,?,?)",
                             [(job_id, start + i + 1, now, json.dumps(e)) for i, e in enumerate(events)])

    def job_events(self, job_id: str, after_seq: int = 0) -> list[dict]:
        with self._read() as conn:
            rows = conn.execute("SELECT seq, t, data FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                (job_id, after_seq)).fetchall()
        return [{"seq": r["seq"], "t": r["t"], **json.loads(r["data"])} for r in rows]

    def delete_job(self, job_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM job_events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

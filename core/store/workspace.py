"""The workspace: variants in an SQLite index (WAL, safe for several processes at once) plus
artifact files under one directory; its jobs live in the same database, kept by `self.jobs`
(a `core.store.jobstore.JobStore`).

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from core.base import paths
from core.base.errors import is_disk_full
from core.base.kinds import empty_kind, is_float, kind_label
from core.base.paths import workspace_dir
from core.compress.quant.files import model_from_bytes
from core.formats import encoding as formats
from core.measure.speed import legacy_latency_update
from core.store.db import Database
from core.store.jobstore import FINAL_JOB_STATES, JOB_STATES, Job, JobStore  # noqa: F401  (re-exported)
from core.store.migrate import retire_legacy_latency

BASELINES_DIR = paths.BASELINES_DIR
SIDECAR = "variant.json"          # beside each weights file: the variant's whole index row
SEEDED_FILE = "baselines.json"    # which shipped baselines this workspace has ever seeded

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
"""
OUR_TABLES = {"variants", "jobs", "job_events"}
VARIANT_COLUMNS = {"id", "name", "parent_id", "dataset", "arch", "recipe", "metrics", "kind", "weights_file", "format",
                   "origin", "notes", "created_at"}



class VariantNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "variant not found"


class VariantHasChildren(RuntimeError):
    """Deleting would orphan children; pass cascade=True or reparent=True."""


class VariantInUse(RuntimeError):
    """A queued or running job uses the variant: cancel the job first."""


def lineage_of(get_variant, variant_id: str) -> list[Variant]:
    """The variant and its ancestors, root first, read through `get_variant` (a workspace's, or a
    stand-in's that holds only the records a job was sent); a cycle ends the walk."""
    chain, seen = [], set()
    v: Variant | None = get_variant(variant_id)
    while v is not None and v.id not in seen:
        chain.append(v)
        seen.add(v.id)
        v = get_variant(v.parent_id) if v.parent_id else None
    return chain[::-1]


class WorkspaceError(RuntimeError):
    """The workspace cannot be opened or written; the message says what is wrong, where, and how
    to recover. The CLI prints it as one line, the app as a page, never a traceback."""




def write_temp(path: Path, data: bytes) -> Path:
    """Write `data` to a temp file beside `path` and fsync it; the caller renames it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over `path`."""
    os.replace(write_temp(path, data), path)


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
        return kind_label(self.kind)

    @property
    def is_float(self) -> bool:
        """Its weights are float numbers that a gradient step can move and a quantizer can read:
        neither quantized (integer kernels) nor simulated (low-bit codes)."""
        return is_float(self.kind)

    @property
    def is_shared(self) -> bool:
        """Its file holds weight-sharing codebooks and codes (Deep Compression's later stages)."""
        return self.format.startswith("shared+")

    def to_dict(self) -> dict:
        return asdict(self)


def _variant_from_row(r: sqlite3.Row) -> Variant:
    return Variant(id=r["id"], name=r["name"], parent_id=r["parent_id"], dataset=r["dataset"],
                   arch=json.loads(r["arch"]), recipe=json.loads(r["recipe"]), metrics=json.loads(r["metrics"]),
                   kind=json.loads(r["kind"]), weights_file=r["weights_file"], format=r["format"],
                   origin=r["origin"], notes=r["notes"], created_at=r["created_at"])


def _sidecar_bytes(v: Variant) -> bytes:
    """The variant's whole index row as JSON: what `repair` rebuilds the index from."""
    return json.dumps({"workbench_variant": 1, **asdict(v)}, indent=1).encode()


def variant_from_sidecar(data: bytes) -> Variant:
    d = json.loads(data)
    if not isinstance(d, dict) or d.pop("workbench_variant", None) != 1:
        raise ValueError("not a workbench variant record")
    return Variant(**{k: d[k] for k in VARIANT_COLUMNS})


class Workspace:
    """Open (and create) a workspace directory. Cheap: every call opens its own connection, so a
    Workspace can be shared by threads, and several processes can use the same directory."""

    def __init__(self, root: str | os.PathLike | None = None, *, seed_baselines: bool = True):
        self.root = workspace_dir(root).resolve()
        self.db_path = self.root / "workbench.db"
        self.variants_dir = self.root / "variants"
        self.jobs_dir = self.root / "jobs"
        self.read_only_reason: str | None = None   # set when the disk cannot be written: reads still work
        self._make_dirs()
        self.db = Database(self.db_path)
        self.jobs = JobStore(self.db, self.jobs_dir)
        self._open_index()
        if self.read_only_reason is None:
            self._remove_stray_temp_files()
            self._backfill_sidecars()
            if seed_baselines:
                try:
                    self.seed_baselines()
                except (OSError, sqlite3.OperationalError) as e:
                    if not is_disk_full(e):
                        raise
                    self.read_only_reason = (f"the disk of {self.root} is full or cannot be written ({e}): reading "
                                             "works, nothing can be saved")
            if self.read_only_reason is None:
                retire_legacy_latency(self)

    def _make_dirs(self) -> None:
        for d in (self.root, self.variants_dir, self.jobs_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise WorkspaceError(f"cannot use {self.root} as a workspace: {d} exists and is not a directory") from None
            except PermissionError:
                raise WorkspaceError(f"cannot create the workspace directory {d}: permission denied") from None
            except OSError as e:
                raise WorkspaceError(f"cannot create the workspace directory {d}: {e.strerror or e}") from None

    def _open_index(self) -> None:
        """Check the database before anything is written to it: a damaged or foreign file is an
        error that says how to recover, never a silently re-created empty index."""
        recover = (f"Run `python -m core --workspace {self.root} check` to see what is left, and "
                   f"`python -m core --workspace {self.root} repair` to rebuild the index from the variant files.")
        try:
            with self.db.read() as conn:
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                columns = {r["name"] for r in conn.execute("PRAGMA table_info(variants)")}
        except sqlite3.DatabaseError as e:
            raise WorkspaceError(f"the workspace database {self.db_path} is damaged or not a database ({e}). "
                                 + recover) from None
        if ok != "ok":
            raise WorkspaceError(f"the workspace database {self.db_path} is damaged (integrity check: {ok}). " + recover)
        if (tables and not tables & OUR_TABLES) or ("variants" in tables and not VARIANT_COLUMNS <= columns):
            raise WorkspaceError(f"{self.db_path} is not a Compression Workbench database (it holds the tables "
                                 f"{', '.join(sorted(tables))}). Point --workspace / WORKBENCH_HOME elsewhere.")
        try:
            with self.db.read() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
            self.jobs.ensure_schema()
        except (sqlite3.OperationalError, OSError) as e:
            if not (tables and is_disk_full(e)):
                raise WorkspaceError(f"cannot set up the workspace database {self.db_path}: {e}") from None
            self.read_only_reason = (f"the disk of {self.root} is full or cannot be written ({e}): reading works, "
                                     "nothing can be saved")

    # ------------------------------------------------------------ plumbing

    def _remove_stray_temp_files(self) -> None:
        # temp files older than an hour can only be left by a killed writer
        cutoff = time.time() - 3600
        for p in self.variants_dir.glob("*/.*.tmp"):
            with contextlib.suppress(OSError):
                if p.stat().st_mtime < cutoff:
                    p.unlink()

    def _check_writable(self) -> None:
        if self.read_only_reason:
            raise WorkspaceError(f"cannot save: {self.read_only_reason}")

    def _sidecar_path(self, v: Variant) -> Path:
        return (self.root / v.weights_file).parent / SIDECAR

    def _backfill_sidecars(self) -> None:
        """Variants stored before sidecars existed get theirs, so `repair` can bring them back."""
        for v in self.list_variants():
            path = self._sidecar_path(v)
            if not path.exists() and (self.root / v.weights_file).exists():
                with contextlib.suppress(OSError):
                    atomic_write(path, _sidecar_bytes(v))

    def unindexed(self) -> list[Path]:
        """Variant directories whose weights are on disk but whose id is not in the index (what a
        lost or re-created database leaves behind; `core.store.repair` brings them back)."""
        with self.db.read() as conn:
            known = {r[0] for r in conn.execute("SELECT id FROM variants")}
        return sorted(d for d in self.variants_dir.iterdir() if d.is_dir() and d.name not in known
                      and (d / "weights.safetensors").exists())

    # ------------------------------------------------------------ variants

    def add_variant(self, model_or_state: nn.Module | dict, *, name: str, dataset: str, arch: dict, recipe: list[dict],
                    metrics: dict, kind: dict | None = None, parent_id: str | None = None, origin: str | None = None,
                    notes: str = "", variant_id: str | None = None, weights: bytes | None = None,
                    fmt: str | None = None) -> Variant:
        """Store a variant: its weights in the best honest format (or the given `weights` bytes)
        and its row. `metrics["size_bytes"]` is set to the length of the file actually written."""
        vid = variant_id or uuid.uuid4().hex[:8]
        kind = {**empty_kind(), **(kind or {})}
        meta = {"name": name, "dataset": dataset, "arch": json.dumps(arch)}
        if weights is None:
            state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
            weights, fmt = formats.encode_best(state, meta)
        rel = f"variants/{vid}/weights.safetensors"
        final = self.root / rel
        metrics = {**metrics, "size_bytes": len(weights)}
        v = Variant(vid, name, parent_id, dataset, arch, recipe, metrics, kind, rel, fmt or "dense", origin, notes)
        self._check_writable()
        tmp = write_temp(final, weights)
        side, side_tmp = final.parent / SIDECAR, write_temp(final.parent / SIDECAR, _sidecar_bytes(v))
        try:
            # one transaction: the parent check, the row, and the file renamed into place before the
            # commit; a refused row (missing parent, an id that exists) never touches an existing file
            with self.db.write() as conn:
                if parent_id is not None and conn.execute("SELECT 1 FROM variants WHERE id = ?",
                                                          (parent_id,)).fetchone() is None:
                    raise VariantNotFound(f"no variant {parent_id!r} in workspace {self.root} (the parent)")
                conn.execute(
                    "INSERT INTO variants (id, name, parent_id, dataset, arch, recipe, metrics, kind, weights_file,"
                    " format, origin, notes, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (v.id, v.name, v.parent_id, v.dataset, json.dumps(arch), json.dumps(recipe), json.dumps(metrics),
                     json.dumps(kind), rel, v.format, origin, notes, v.created_at))
                os.replace(tmp, final)
                os.replace(side_tmp, side)
        finally:
            for t in (tmp, side_tmp):
                with contextlib.suppress(OSError):
                    t.unlink()   # still there only when the row was refused
            with contextlib.suppress(OSError):
                final.parent.rmdir()   # ... and so is an empty directory (a stored variant's is not empty)
        return v

    def change_token(self) -> tuple[int, ...] | None:
        """A token that changes whenever anyone (any process) commits to the index: variants or
        jobs. Readers that keep what they read key it by the token (read once per change). None
        when the index cannot be read now (then read it directly, and get its error)."""
        return self.db.change_token()

    def changed_since(self, token: tuple[int, ...] | None) -> bool:
        """Whether anything was committed to the index since `token` was taken (True when unsure)."""
        now = self.change_token()
        return now is None or now != token

    def get_variant(self, ref: str) -> Variant:
        """By id, unique id prefix, or unique name. `%` and `_` are plain characters here (no
        LIKE wildcards), and an empty reference matches nothing."""
        if not isinstance(ref, str) or not ref.strip():
            raise VariantNotFound("no variant given: pass an id, an id prefix or a name")
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM variants WHERE id = ?", (ref,)).fetchone()
            if row is None:
                rows = conn.execute("SELECT * FROM variants WHERE substr(id, 1, length(?)) = ? OR name = ?",
                                    (ref, ref, ref)).fetchall()
                if len(rows) > 1:
                    raise VariantNotFound(f"{ref!r} matches {len(rows)} variants; use the id")
                row = rows[0] if rows else None
        if row is None:
            raise VariantNotFound(f"no variant {ref!r} in workspace {self.root}")
        return _variant_from_row(row)

    def list_variants(self, dataset: str | None = None) -> list[Variant]:
        with self.db.read() as conn:
            if dataset:
                rows = conn.execute("SELECT * FROM variants WHERE dataset = ? ORDER BY created_at", (dataset,))
            else:
                rows = conn.execute("SELECT * FROM variants ORDER BY created_at")
            return [_variant_from_row(r) for r in rows.fetchall()]

    def children(self, variant_id: str) -> list[Variant]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT * FROM variants WHERE parent_id = ? ORDER BY created_at", (variant_id,))
            return [_variant_from_row(r) for r in rows.fetchall()]

    def lineage(self, variant_id: str) -> list[Variant]:
        """The variant and its ancestors, root first."""
        return lineage_of(self.get_variant, variant_id)

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
        return model_from_bytes(v.arch, self.weights_path(v).read_bytes())

    def update_variant(self, variant_id: str, *, name: str | None = None, metrics: dict | None = None,
                       notes: str | None = None) -> Variant:
        """Rename, merge new metrics into the stored ones, or replace the notes: the read and the
        write are one transaction, so two measurements at once never lose each other's keys."""
        vid = self.get_variant(variant_id).id
        with self.db.write() as conn:
            row = conn.execute("SELECT metrics FROM variants WHERE id = ?", (vid,)).fetchone()
            if row is None:
                raise VariantNotFound(f"variant {vid} was deleted meanwhile")
            if name is not None:
                conn.execute("UPDATE variants SET name = ? WHERE id = ?", (name, vid))
            if metrics is not None:
                merged = {**json.loads(row["metrics"]), **metrics}
                conn.execute("UPDATE variants SET metrics = ? WHERE id = ?", (json.dumps(merged), vid))
            if notes is not None:
                conn.execute("UPDATE variants SET notes = ? WHERE id = ?", (notes, vid))
            row = conn.execute("SELECT * FROM variants WHERE id = ?", (vid,)).fetchone()
            v = _variant_from_row(row)
            atomic_write(self._sidecar_path(v), _sidecar_bytes(v))   # inside the transaction: both or neither
        return v

    def delete_variant(self, variant_id: str, *, cascade: bool = False, reparent: bool = False) -> list[str]:
        """Delete a variant. With children, refuse unless `cascade` (delete the whole subtree) or
        `reparent` (children move to this variant's parent). Returns the deleted ids. The check of
        the children and the delete are one transaction: a child added meanwhile is never orphaned."""
        v = self.get_variant(variant_id)
        busy = self.jobs.jobs_using(v.id)
        if busy:
            raise VariantInUse(f"{v.name} ({v.id}) is used by {len(busy)} queued or running job(s): "
                               + ", ".join(f"{j.title or j.kind} ({j.id})" for j in busy)
                               + ". Cancel the job first, or wait until it ends.")
        with self.db.write() as conn:
            kids = [dict(r) for r in conn.execute("SELECT id, name FROM variants WHERE parent_id = ? ORDER BY created_at",
                                                  (v.id,))]
            if kids and not (cascade or reparent):
                names = ", ".join(f"{k['name']} ({k['id']})" for k in kids)
                raise VariantHasChildren(f"{v.name} ({v.id}) has {len(kids)} child variant(s): {names}. "
                                         "Delete with cascade (the whole subtree) or reparent (children move up).")
            doomed = [v.id]
            if cascade:
                frontier = [v.id]
                while frontier:
                    below = [r["id"] for r in conn.execute("SELECT id FROM variants WHERE parent_id = ?",
                                                           (frontier.pop(),))]
                    doomed += below
                    frontier += below
            if reparent:
                conn.execute("UPDATE variants SET parent_id = ? WHERE parent_id = ?", (v.parent_id, v.id))
            conn.executemany("DELETE FROM variants WHERE id = ?", [(i,) for i in doomed])
        for i in doomed:
            shutil.rmtree(self.variants_dir / i, ignore_errors=True)
        return doomed

    # ------------------------------------------------------------ shipped baselines

    def seed_baselines(self, directory: Path = BASELINES_DIR, *, restore: bool = False) -> list[Variant]:
        """Import every shipped baseline (`baselines/*.safetensors`) this workspace has never had.
        A baseline the user deleted stays deleted (the workspace remembers what it seeded, in a
        file that outlives the database); `restore=True` brings back the missing ones."""
        seeded_file = self.root / SEEDED_FILE
        try:
            seeded = set(json.loads(seeded_file.read_text()))
        except (OSError, ValueError):
            seeded = set()
        added = []
        for path in sorted(directory.glob("*.safetensors")):
            origin = f"baseline:{path.stem}"
            if path.stem in seeded and not restore:
                continue
            with self.db.read() as conn:
                present = conn.execute("SELECT 1 FROM variants WHERE origin = ?", (origin,)).fetchone()
            if not present:
                data = path.read_bytes()
                meta = formats.read_metadata(data)
                info = json.loads(meta["variant"])
                metrics = info["metrics"] | (legacy_latency_update(info["metrics"]) or {})   # pre-lane figures retired
                try:
                    added.append(self.add_variant(
                        {}, name=info["name"], dataset=info["dataset"], arch=info["arch"], recipe=info["recipe"],
                        metrics=metrics, kind=info.get("kind"), origin=origin, notes=info.get("notes", ""),
                        variant_id=f"base-{path.stem}", weights=data, fmt=meta.get(formats.FORMAT_KEY, "dense")))
                except sqlite3.IntegrityError:
                    pass  # another process seeded it at the same moment, or a user variant took the id
            seeded.add(path.stem)
        with contextlib.suppress(OSError):
            atomic_write(seeded_file, json.dumps(sorted(seeded)).encode())
        return added

    def restore_baselines(self) -> list[Variant]:
        """Bring back the shipped baselines that were deleted."""
        self._check_writable()
        return self.seed_baselines(restore=True)

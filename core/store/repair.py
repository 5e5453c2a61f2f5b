"""Check a workspace and rebuild its index from the variant files.

Every variant directory holds its weights and `variant.json`, the variant's whole index row (id,
name, parent, dataset, arch, recipe, metrics, kind, created time). So when `workbench.db` is lost,
truncated or damaged, `repair` rebuilds the index, lineage included, and nothing the user made is
gone. Job history lives only in the database: a rebuilt index starts with no jobs (said so).

    python -m core --workspace DIR check      # what is wrong, nothing changed
    python -m core --workspace DIR repair     # move a damaged database aside, re-index the files
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.base.paths import workspace_dir
from core.formats import encoding as formats
from core.store.workspace import (
    OUR_TABLES,
    SIDECAR,
    VARIANT_COLUMNS,
    Variant,
    Workspace,
    WorkspaceError,
    variant_from_sidecar,
)

WEIGHTS = "weights.safetensors"


@dataclass
class CheckReport:
    root: Path
    database: str                                   # "ok", "missing", "empty", "damaged: ...", "foreign: ..."
    indexed: int = 0                                # rows in the index
    on_disk: int = 0                                # variant directories with a weights file
    unindexed: list[str] = field(default_factory=list)        # files without a row
    missing_files: list[str] = field(default_factory=list)    # rows without a file
    unreadable: dict[str, str] = field(default_factory=dict)  # variant dir -> why its record is unusable

    @property
    def ok(self) -> bool:
        return self.database == "ok" and not (self.unindexed or self.missing_files or self.unreadable)

    def lines(self) -> list[str]:
        out = [f"workspace {self.root}", f"database: {self.database}",
               f"variants: {self.indexed} in the index, {self.on_disk} on disk"]
        if self.unindexed:
            out.append(f"{len(self.unindexed)} variant file(s) not in the index: {', '.join(self.unindexed)}")
        if self.missing_files:
            out.append(f"{len(self.missing_files)} index row(s) without a file: {', '.join(self.missing_files)}")
        for d, why in self.unreadable.items():
            out.append(f"{d}: {why}")
        out.append("all good" if self.ok else
                   f"run `python -m core --workspace {self.root} repair` to rebuild the index from the files")
        return out


def _database_state(db: Path) -> tuple[str, set[str]]:
    """("ok" | "missing" | "empty" | "damaged: ..." | "foreign: ...", indexed ids)."""
    if not db.exists():
        return "missing", set()
    if db.stat().st_size == 0:
        return "empty (zero bytes): the index is gone, the files are not", set()
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                return f"damaged: {verdict}", set()
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and not tables & OUR_TABLES:
                return f"foreign: it holds the tables {', '.join(sorted(tables))}", set()
            if "variants" not in tables:
                return "empty (no variants table)", set()
            columns = {r[1] for r in conn.execute("PRAGMA table_info(variants)")}
            if not VARIANT_COLUMNS <= columns:
                return "foreign: the variants table has other columns", set()
            return "ok", {r[0] for r in conn.execute("SELECT id FROM variants")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        return f"damaged: {e}", set()


def _record(d: Path) -> Variant:
    """The variant stored in directory `d`: its sidecar, else what the weights file's header says
    (a shipped baseline carries its whole record there; other files only name, dataset and arch)."""
    side = d / SIDECAR
    if side.exists():
        v = variant_from_sidecar(side.read_bytes())
        if v.id != d.name:
            raise ValueError(f"its record names another id ({v.id})")
        return v
    with open(d / WEIGHTS, "rb") as f:     # the header only: never the tensors
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        meta = formats.read_metadata(head + f.read(min(n, 10_000_000)))
    if "variant" in meta:
        info = json.loads(meta["variant"])
        return Variant(d.name, info["name"], None, info["dataset"], info["arch"], info["recipe"], info["metrics"],
                       info.get("kind", {}), f"variants/{d.name}/{WEIGHTS}", meta.get(formats.FORMAT_KEY, "dense"),
                       f"baseline:{d.name.removeprefix('base-')}" if d.name.startswith("base-") else None,
                       info.get("notes", ""), (d / WEIGHTS).stat().st_mtime)
    if not {"name", "dataset", "arch"} <= set(meta):
        raise ValueError("no variant.json and the weights file does not say what it is")
    return Variant(d.name, meta["name"], None, meta["dataset"], json.loads(meta["arch"]), [], {}, {},
                   f"variants/{d.name}/{WEIGHTS}", meta.get(formats.FORMAT_KEY, "dense"), None,
                   "recovered from its weights file alone: recipe and metrics unknown, measure it again",
                   (d / WEIGHTS).stat().st_mtime)


def check(root: str | os.PathLike | None = None) -> CheckReport:
    """What is wrong with a workspace; changes nothing."""
    root = workspace_dir(root).resolve()
    if not root.is_dir():
        raise WorkspaceError(f"no workspace at {root}: " + ("it is a file, not a directory" if root.exists()
                                                            else "that directory does not exist"))
    state, indexed = _database_state(root / "workbench.db")
    rep = CheckReport(root, state, len(indexed))
    vdir = root / "variants"
    dirs = sorted(d for d in vdir.iterdir() if d.is_dir() and (d / WEIGHTS).exists()) if vdir.is_dir() else []
    rep.on_disk = len(dirs)
    rep.unindexed = [d.name for d in dirs if d.name not in indexed]
    rep.missing_files = sorted(i for i in indexed if not (vdir / i / WEIGHTS).exists())
    for d in dirs:
        if d.name not in indexed:
            try:
                _record(d)
            except (OSError, ValueError, KeyError, TypeError) as e:
                rep.unreadable[d.name] = f"cannot be re-indexed: {e}"
    return rep


@dataclass
class RepairReport:
    moved_aside: Path | None = None
    restored: list[str] = field(default_factory=list)
    dropped_rows: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = []
        if self.moved_aside:
            out.append(f"moved the damaged database aside to {self.moved_aside} (its job history is not recovered)")
        out.append(f"re-indexed {len(self.restored)} variant(s)" + (f": {', '.join(self.restored)}" if self.restored
                                                                   else ""))
        if self.dropped_rows:
            out.append(f"removed {len(self.dropped_rows)} index row(s) whose file is gone: {', '.join(self.dropped_rows)}")
        return out + self.notes


def _move_aside(db: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = db.with_name(f"{db.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(db) + suffix)
        if src.exists():
            os.replace(src, Path(str(target) + suffix))
    return target


def repair(root: str | os.PathLike | None = None) -> RepairReport:
    """Rebuild the index from the variant files: a damaged, foreign-looking or emptied database is
    moved aside first; rows whose file is gone are removed (their children move to their parent)."""
    root = workspace_dir(root).resolve()
    rep = RepairReport()
    before = check(root)
    db = root / "workbench.db"
    if before.database.startswith("foreign"):
        raise WorkspaceError(f"{db} is not a Compression Workbench database ({before.database}); repair leaves it "
                             "alone. Point --workspace / WORKBENCH_HOME at the workspace directory.")
    if before.database not in ("ok", "missing"):
        if db.exists() and db.stat().st_size == 0:
            db.unlink()
        else:
            rep.moved_aside = _move_aside(db)
    ws = Workspace(root, seed_baselines=False)
    with ws.db.read() as conn:
        known = {r[0] for r in conn.execute("SELECT id FROM variants")}
    records: dict[str, Variant] = {}
    for d in ws.unindexed():
        try:
            records[d.name] = _record(d)
        except (OSError, ValueError, KeyError, TypeError) as e:
            rep.notes.append(f"{d.name}: not re-indexed ({e})")
    # parents before children, so lineage is kept; a parent that is gone makes its child a root
    order, placed = [], set(known)
    pending = dict(records)
    while pending:
        ready = [v for v in pending.values() if v.parent_id is None or v.parent_id in placed
                 or v.parent_id not in pending] or list(pending.values())   # a cycle: break it
        for v in sorted(ready, key=lambda v: v.created_at):
            if v.parent_id is not None and v.parent_id not in placed:
                rep.notes.append(f"{v.id}: its parent {v.parent_id} is gone; it is now a root variant")
                v.parent_id = None
            order.append(v)
            placed.add(v.id)
            pending.pop(v.id)
    with ws.db.write() as conn:
        for v in order:
            conn.execute("INSERT INTO variants (id, name, parent_id, dataset, arch, recipe, metrics, kind, weights_file,"
                         " format, origin, notes, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                         (v.id, v.name, v.parent_id, v.dataset, json.dumps(v.arch), json.dumps(v.recipe),
                          json.dumps(v.metrics), json.dumps(v.kind), v.weights_file, v.format, v.origin, v.notes,
                          v.created_at))
            rep.restored.append(v.id)
        for vid in check(root).missing_files:
            parent = conn.execute("SELECT parent_id FROM variants WHERE id = ?", (vid,)).fetchone()[0]
            conn.execute("UPDATE variants SET parent_id = ? WHERE parent_id = ?", (parent, vid))
            conn.execute("DELETE FROM variants WHERE id = ?", (vid,))
            rep.dropped_rows.append(vid)
    with contextlib.suppress(WorkspaceError, OSError):
        ws._backfill_sidecars()   # records recovered from weights headers get their sidecar now
    return rep

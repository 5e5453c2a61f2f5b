"""Jobs, their events and logs: rows in the workspace database that every process shares.

The store only keeps state; `core.run.jobs` moves the queue and a `core.run.runners.Runner` executes jobs.
Every state change is a compare-and-set (`update(..., only_if_state=...)`), claiming the next job
is one transaction (`claim_next`), and only known columns can be written: a column name never
comes from a caller into the SQL text.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from core.store.db import Database

JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_JOB_STATES = ("done", "failed", "cancelled", "interrupted")
LOG_TAIL_CHARS = 20_000

SCHEMA = """
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
    heartbeat_at REAL,
    result TEXT,
    runner TEXT,
    node TEXT,
    claim_token TEXT
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
# columns added after the first release: ALTER TABLE brings older workspaces up to date
ADDED_COLUMNS = {"result": "TEXT", "runner": "TEXT", "node": "TEXT", "claim_token": "TEXT"}
# what `update` may set; id, kind, config, log and created_at are written by their own methods
UPDATABLE = ("title", "state", "progress", "message", "error", "device", "pid", "pid_start", "variant_id",
             "cancel_requested", "started_at", "finished_at", "heartbeat_at", "result", "runner", "node")
JSON_COLUMNS = ("config", "result")


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
    result: dict | None = None     # the task's JSON-able result (e.g. a sensitivity scan)
    runner: str | None = None      # which runner executed it ("local", ...)
    node: str | None = None        # where: host name or cluster node
    claim_token: str | None = None  # set by claim_next, consumed by the one worker that runs the job

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


def variant_keys(config: dict) -> list[str]:
    """The config keys that name a variant: `variant`, any `*_variant`, `teacher`, `student`,
    `source` (distillation and transfer learning; the last two may also name a registry model)."""
    return [k for k, v in config.items() if isinstance(v, str) and (k == "variant" or k.endswith("_variant")
                                                                     or k in ("teacher", "student", "source"))]


def _job_from_row(r) -> Job:
    d = dict(r)
    for k in JSON_COLUMNS:
        d[k] = json.loads(d[k]) if d.get(k) else ({} if k == "config" else None)
    d["cancel_requested"] = bool(d["cancel_requested"])
    return Job(**d)


def _update_statement(job_id: str, only_if_state: tuple[str, ...] | None, columns: dict) -> tuple[str, list]:
    """The UPDATE for `columns` of one job; a column name outside UPDATABLE is a ValueError."""
    unknown = [k for k in columns if k not in UPDATABLE]
    if unknown:
        raise ValueError(f"cannot set job column(s) {', '.join(map(repr, unknown))}; "
                         f"settable: {', '.join(UPDATABLE)}")
    if "state" in columns and columns["state"] not in JOB_STATES:
        raise ValueError(f"unknown job state {columns['state']!r}; one of {', '.join(JOB_STATES)}")
    values = {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in columns.items()}
    names = [k for k in UPDATABLE if k in values]   # the SQL text holds names from UPDATABLE only
    q = f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in names)} WHERE id = ?"
    args = [values[k] for k in names] + [job_id]
    if only_if_state:
        q += f" AND state IN ({','.join('?' * len(only_if_state))})"
        args += list(only_if_state)
    return q, args


def _append_log(conn, job_id: str, text: str) -> None:
    conn.execute("UPDATE jobs SET log = substr(log || ?, -?) WHERE id = ?", (text, LOG_TAIL_CHARS, job_id))


def _add_events(conn, job_id: str, events: list[dict]) -> None:
    start = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM job_events WHERE job_id = ?", (job_id,)).fetchone()[0]
    now = time.time()
    conn.executemany("INSERT INTO job_events (job_id, seq, t, data) VALUES (?,?,?,?)",
                     [(job_id, start + i + 1, now, json.dumps(e)) for i, e in enumerate(events)])


class JobStore:
    def __init__(self, db: Database, jobs_dir: Path):
        self.db = db
        self.jobs_dir = jobs_dir

    def ensure_schema(self) -> None:
        with self.db.read() as conn:
            conn.executescript(SCHEMA)   # IF NOT EXISTS: safe when several processes open the workspace
        have = self.db.columns("jobs")
        missing = {c: t for c, t in ADDED_COLUMNS.items() if c not in have}
        if missing:
            with self.db.write() as conn:
                have = {r["name"] for r in conn.execute("PRAGMA table_info(jobs)")}   # another process may have
                for col, typ in missing.items():
                    if col not in have:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {col} {typ}")   # names from ADDED_COLUMNS only

    def job_dir(self, job_id: str) -> Path:
        """The job's own directory (worker log), created."""
        d = self.jobs_dir / job_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ------------------------------------------------------------ rows

    def create(self, kind: str, config: dict, title: str = "") -> Job:
        jid = uuid.uuid4().hex[:10]
        with self.db.write() as conn:
            conn.execute("INSERT INTO jobs (id, kind, title, config, state, created_at) VALUES (?,?,?,?,?,?)",
                         (jid, kind, title, json.dumps(config), "queued", time.time()))
        return self.get(jid)

    def get(self, job_id: str) -> Job:
        with self.db.read() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id!r}")
        return _job_from_row(row)

    def list(self, states: tuple[str, ...] | None = None, limit: int = 200) -> list[Job]:
        with self.db.read() as conn:
            if states:
                marks = ",".join("?" * len(states))
                rows = conn.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at DESC LIMIT ?",
                                    (*states, limit))
            else:
                rows = conn.execute("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", (limit,))
            return [_job_from_row(r) for r in rows.fetchall()]

    def update(self, job_id: str, *, only_if_state: tuple[str, ...] | None = None, **columns) -> bool:
        """Set columns of a job; with `only_if_state`, only when its state is one of those.
        Returns whether a row changed (a compare-and-set for state transitions). Only the columns
        in UPDATABLE can be set: anything else is a ValueError, and never reaches the SQL text."""
        if not columns:
            return False
        q, args = _update_statement(job_id, only_if_state, columns)
        with self.db.write() as conn:
            return conn.execute(q, args).rowcount > 0

    def claim_next(self, limit: int, runner: str, node: str | None = None) -> Job | None:
        """In ONE committed transaction: when fewer than `limit` jobs run, mark the oldest queued
        job running (claimed by `runner`) and return it; else None. The caller starts its worker
        only after this returns, so a worker never sees a claim that is not yet committed."""
        with self.db.write() as conn:
            running = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
            if running >= limit:
                return None
            row = conn.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1"
                               ).fetchone()
            if row is None:
                return None
            now = time.time()
            conn.execute("UPDATE jobs SET state = 'running', started_at = ?, heartbeat_at = ?, runner = ?, node = ?, "
                         "claim_token = ?, message = 'claimed: starting a worker' WHERE id = ? AND state = 'queued'",
                         (now, now, runner, node, uuid.uuid4().hex, row["id"]))
        return self.get(row["id"])

    def take_claim(self, job_id: str, token: str | None, **columns) -> bool:
        """For the worker about to run a job: check AND consume the claim token in one statement,
        setting `columns` (pid, device, ...). False when the job is not running or its claim was
        never this token or is already taken: a job runs at most once, whatever starts a worker."""
        if not token:
            return False
        unknown = [k for k in columns if k not in UPDATABLE]
        if unknown:
            raise ValueError(f"cannot set job column(s) {', '.join(map(repr, unknown))}")
        names = [k for k in UPDATABLE if k in columns]
        sets = "".join(f", {k} = ?" for k in names)   # names from UPDATABLE only
        with self.db.write() as conn:
            return conn.execute(f"UPDATE jobs SET claim_token = NULL{sets} WHERE id = ? AND state = 'running' "
                                "AND claim_token = ?", [columns[k] for k in names] + [job_id, token]).rowcount == 1

    def for_variant(self, kind: str, variant_ids: str | Iterable[str], *, key: str = "variant", made: bool = False,
                    limit: int = 200) -> list[Job]:
        """Jobs of `kind` whose config's `key` (a variant key: `variant`, `source`, `teacher`...)
        names `variant_ids` (one id or several), newest first; with `made`, also the jobs that made
        one of them. The one query behind every "jobs of this variant" list a page shows."""
        if key not in variant_keys({key: ""}):
            raise ValueError(f"{key!r} is not a config key that names a variant")
        ids = [variant_ids] if isinstance(variant_ids, str) else list(dict.fromkeys(variant_ids))
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        where = f"json_extract(config, ?) IN ({marks})" + (f" OR variant_id IN ({marks})" if made else "")
        args = [kind, f"$.{key}", *ids, *(ids if made else []), limit]
        with self.db.read() as conn:   # the SQL text holds placeholders only: ids and the key are bound
            rows = conn.execute(f"SELECT * FROM jobs WHERE kind = ? AND ({where}) ORDER BY created_at DESC LIMIT ?",
                                args).fetchall()
        return [_job_from_row(r) for r in rows]

    def jobs_using(self, variant_id: str) -> list[Job]:
        """Queued or running jobs whose config names `variant_id` (a variant they read)."""
        return [j for j in self.list(states=("queued", "running"), limit=10_000)
                if any(j.config.get(k) == variant_id for k in variant_keys(j.config))]

    def has_queued(self) -> bool:
        with self.db.read() as conn:
            return conn.execute("SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1").fetchone() is not None

    def delete(self, job_id: str) -> None:
        with self.db.write() as conn:
            conn.execute("DELETE FROM job_events WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # ------------------------------------------------------------ events and logs

    def append_log(self, job_id: str, text: str) -> None:
        """Append to the job's log, of which the last LOG_TAIL_CHARS characters are kept."""
        with self.db.write() as conn:
            _append_log(conn, job_id, text)

    def add_events(self, job_id: str, events: list[dict]) -> None:
        """Append events (JSON-able dicts), numbered on from the job's last `seq`."""
        if not events:
            return
        with self.db.write() as conn:
            _add_events(conn, job_id, events)

    def events(self, job_id: str, after_seq: int = 0) -> list[dict]:
        with self.db.read() as conn:
            rows = conn.execute("SELECT seq, t, data FROM job_events WHERE job_id = ? AND seq > ? ORDER BY seq",
                                (job_id, after_seq)).fetchall()
        return [{"seq": r["seq"], "t": r["t"], **json.loads(r["data"])} for r in rows]

    def apply(self, job_id: str, messages: list[tuple]) -> None:
        """Write a worker's messages: ("events", [..]), ("progress", p, text), ("log", text),
        ("device", name), ("heartbeat",). A worker that cannot open this database sends these
        instead (see core.run.channels.CollectingChannel); a local worker's StoreChannel writes them the
        same way. An unknown message is a ValueError and nothing of the batch is written."""
        events: list[dict] = []
        logs: list[str] = []
        cols: dict = {}
        beat = False
        for m in messages:
            if m[0] == "events":
                events += m[1]
            elif m[0] == "progress":
                cols.update(progress=m[1], message=m[2])
            elif m[0] == "device":
                cols["device"] = m[1]
            elif m[0] == "log":
                logs.append(m[1])
            elif m[0] == "heartbeat":
                beat = True
            else:
                raise ValueError(f"unknown job message {m[0]!r}")
        if not (logs or events or cols or beat):
            return
        with self.db.write() as conn:   # one transaction per batch: a reader sees all of it or none
            if logs:
                _append_log(conn, job_id, "".join(logs))
            if events:
                _add_events(conn, job_id, events)
            if cols or beat:
                conn.execute(*_update_statement(job_id, ("running",), {"heartbeat_at": time.time(), **cols}))

    def cancel_requested(self, job_id: str) -> bool:
        """True when someone asked the job to stop, or it is no longer running."""
        with self.db.read() as conn:
            row = conn.execute("SELECT state, cancel_requested FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row is None or bool(row["cancel_requested"]) or row["state"] != "running"

"""Where things are: the repository and its shipped folders, and the workspace a process uses
(env WORKBENCH_HOME, else ./workspace). One place, so moving a module never moves a path; and
`slug`, the one rule for a name made from free text (a dataset's, a download's)."""
from __future__ import annotations

import os
import re
from pathlib import Path

CORE_DIR = Path(__file__).resolve().parents[1]      # the `core` package (travels to Ray workers as is)
REPO_ROOT = CORE_DIR.parent
BASELINES_DIR = REPO_ROOT / "baselines"
LESSONS_DIR = REPO_ROOT / "lessons"
PROTO_FILE = REPO_ROOT / "proto" / "predict.proto"


def workspace_dir(root: str | os.PathLike | None = None) -> Path:
    """The workspace directory: `root` if given, else env WORKBENCH_HOME, else ./workspace."""
    return Path(root or os.environ.get("WORKBENCH_HOME") or "workspace")


def slug(text: str, default: str = "dataset", *, keep_case: bool = False, max_len: int = 40) -> str:
    """A safe name from free text: every run of other characters becomes '-', the ends are trimmed,
    at most `max_len` characters; `default` when nothing is left. A name (an uploaded dataset's:
    'My Cats & Dogs' -> 'my-cats-dogs') is lowercase letters, digits, '-' and '_'; with `keep_case`
    (a file name: 'LeNet-5 v1.2' -> 'LeNet-5-v1.2') capitals and dots stay."""
    if keep_case:
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", text or "")
    else:
        s = re.sub(r"[^a-z0-9_-]+", "-", (text or "").lower())
    return s.strip("-._")[:max_len].strip("-._") or default

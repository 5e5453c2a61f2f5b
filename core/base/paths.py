"""Where things are: the repository and its shipped folders, and the workspace a process uses
(env WORKBENCH_HOME, else ./workspace). One place, so moving a module never moves a path."""
from __future__ import annotations

import os
from pathlib import Path

CORE_DIR = Path(__file__).resolve().parents[1]      # the `core` package (travels to Ray workers as is)
REPO_ROOT = CORE_DIR.parent
BASELINES_DIR = REPO_ROOT / "baselines"
LESSONS_DIR = REPO_ROOT / "lessons"
PROTO_FILE = REPO_ROOT / "proto" / "predict.proto"


def workspace_dir(root: str | os.PathLike | None = None) -> Path:
    """The workspace directory: `root` if given, else env WORKBENCH_HOME, else ./workspace."""
    return Path(root or os.environ.get("WORKBENCH_HOME") or "workspace")

"""Live experiments of the Learn lessons: small functions in the engine, registered by name, that a
lesson file (lessons/*.md) names. Each takes the workspace and the lesson's control values and
answers within about two seconds on a 2-core CPU (what cannot is precomputed, shipped small in
lessons/recorded/, and labelled as recorded with its date and device). No Streamlit here."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Metric:
    """One number of an experiment's answer, shown as a metric tile."""

    label: str
    value: str
    delta: str | None = None
    help: str | None = None


@dataclass
class ExperimentResult:
    """What a live experiment shows: plotly figures, metric tiles, an optional table, notes (a
    recorded result says so here: date, device, command), and the settings that open the real
    workbench page with the same configuration ("try it in the workbench")."""

    figures: list[Any] = field(default_factory=list)          # plotly go.Figure objects
    metrics: list[Metric] = field(default_factory=list)
    table: list[dict] | None = None
    notes: list[str] = field(default_factory=list)
    recorded: bool = False                                     # True when any part is a shipped recording
    workbench: dict | None = None    # {"page": "prune", "variant": "base-lenet5", "state": {widget_key: value}}


Experiment = Callable[..., ExperimentResult]     # fn(ws: Workspace, params: dict) -> ExperimentResult
EXPERIMENTS: dict[str, Experiment] = {}


def experiment(name: str) -> Callable[[Experiment], Experiment]:
    """Register `fn(ws, params) -> ExperimentResult` under `name` (the name a lesson file uses)."""
    def register(fn: Experiment) -> Experiment:
        if name in EXPERIMENTS and EXPERIMENTS[name] is not fn:
            raise ValueError(f"experiment {name!r} is registered twice")
        EXPERIMENTS[name] = fn
        return fn
    return register


def run_experiment(name: str, ws, params: dict) -> ExperimentResult:
    """Run the registered experiment `name` with the control values `params`."""
    from core.lessons import experiments  # noqa: F401  (importing registers the built-in experiments)

    if name not in EXPERIMENTS:
        raise ValueError(f"no experiment named {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name](ws, dict(params))


# ---------------------------------------------------------------- recorded results (lessons/recorded/*.json)

def recorded_dir():
    """lessons/recorded/: small JSON files written by scripts/record_lessons.py, committed."""
    from core.lessons.content import LESSONS_DIR

    return LESSONS_DIR / "recorded"


def load_recording(name: str) -> dict | None:
    """A recorded result (`name` like "sensitivity-base-lenet5.json"), or None when not recorded yet."""
    import json

    path = recorded_dir() / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"recorded result {path.name} is not valid JSON ({e}); re-record it with "
                         f"`python scripts/record_lessons.py --only {path.name}`") from e


def recorded_note(rec: dict, what: str) -> str:
    """The label every recorded result carries: what, when, on which device, and how to redo it."""
    return (f"**Recorded**: {what} was measured on {rec.get('recorded_at', '?')} on {rec.get('device', '?')}, "
            f"not now; re-record with `{rec.get('command', 'python scripts/record_lessons.py')}`.")


def weights_digest(ws, variant) -> str:
    """sha256 of a variant's weights file: a recording made on other weights is not shown as theirs."""
    import hashlib

    return hashlib.sha256(ws.weights_path(variant).read_bytes()).hexdigest()

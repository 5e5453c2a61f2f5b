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

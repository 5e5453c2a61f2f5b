"""A sweep job: one task over a grid of two settings (`core.tasks.sweep_grid`), the best trial stored.

Runs its trials one after another in the job's own process (the local runner), or in parallel
with Ray Tune when the job runs on Ray (`core.run.ray.tune`). Events drive the live trials table:
    {"stage": "sweep", "kind": "start", "trials": [{"trial", "params"}], "axes", ...}
    {"stage": "sweep", "kind": "trial_progress", "trial", "progress", "message"}
    {"stage": "sweep", "kind": "trial", <a trial row>}
    {"stage": "sweep", "kind": "result", "result": {...}}
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from core.base.cancel import Cancelled
from core.base.config import DictConfig
from core.measure.metrics import accuracy
from core.store.parcel import variants_parcel
from core.store.variants import VariantDraft
from core.tasks.common import is_model_name, open_parent, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task, validate_config
from core.tasks.sweep_grid import (
    FAMILIES,
    MAX_TRIALS,
    MAX_VALUES,
    OBJECTIVES,
    TrialResult,
    grid,
    pick_best,
    run_trial,
    trial_config,
)

DEFAULT_GRIDS = {"distill": {"temperature": (2.0, 4.0), "alpha": (0.5, 0.9)},
                 "prune_finetune": {"amount": (0.5, 0.8, 0.9), "epochs": (1, 2)}}
DEFAULT_OBJECTIVE = {"distill": "val_accuracy", "prune_finetune": "smallest_within"}


def _default_grid() -> dict:
    return dict(DEFAULT_GRIDS["distill"])


@dataclass(frozen=True)
class SweepJobConfig(DictConfig):
    """Run `family`'s task over the `grid` of its two settings and keep the best trial."""

    variant: str                           # the parent (prune_finetune) or the teacher (distill)
    family: str = "distill"
    grid: dict = field(default_factory=_default_grid)   # {axis: values} for the family's two axes
    student: str = "lenet5-small"          # distill: a registered model name or a variant
    epochs: int = 3                        # distill: epochs per trial (prune_finetune sweeps them)
    subset: int | None = 10000             # train on this many training samples per trial (None: all)
    objective: str | None = None           # None: the family's default
    tolerance: float = 0.01                # smallest_within: allowed validation-accuracy drop (0.01 = 1 pt)
    max_concurrent: int | None = None      # Ray: trials at once (None: as many as the cluster fits)
    cpus_per_trial: int = 1                # Ray: CPUs each trial asks for (its torch threads)
    gpus_per_trial: float = 1.0            # Ray, when the device wants CUDA: 0.25 lets 4 small trials share a GPU
    seed: int = 0
    device: str = "auto"
    name: str | None = None

    def __post_init__(self):
        if not isinstance(self.variant, str) or not self.variant.strip():
            raise ValueError("variant is required: the id or name of the variant to sweep from")
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        axes = FAMILIES[self.family]["axes"]
        if self.grid == _default_grid() and self.family != "distill":
            object.__setattr__(self, "grid", dict(DEFAULT_GRIDS[self.family]))   # the family's own default
        if not isinstance(self.grid, dict) or not set(self.grid) <= set(axes):
            raise ValueError(f"grid takes values for {' and '.join(axes)}, got {self.grid!r}")
        object.__setattr__(self, "grid", {**DEFAULT_GRIDS[self.family], **self.grid})   # an axis left out: its default
        clean = {}
        for axis in axes:
            values = self.grid[axis]
            if isinstance(values, str):   # the CLI's grid.amount=0.5,0.9
                try:
                    values = [float(v) for v in values.split(",") if v.strip()]
                except ValueError:
                    raise ValueError(f"grid {axis} values must be numbers, got {self.grid[axis]!r}") from None
            if isinstance(values, (int, float)):
                values = [values]
            if not isinstance(values, (list, tuple)) or not values or len(values) > MAX_VALUES:
                raise ValueError(f"grid {axis} needs 1 to {MAX_VALUES} values, got {values!r}")
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
                raise ValueError(f"grid {axis} values must be numbers, got {list(values)}")
            if axis == "epochs":
                if any(v != int(v) for v in values):
                    raise ValueError(f"grid epochs must be whole numbers, got {list(values)}")
                values = [int(v) for v in values]
            clean[axis] = tuple(sorted(set(values)))
        object.__setattr__(self, "grid", clean)
        n = len(self.points())
        if n > MAX_TRIALS:
            raise ValueError(f"the grid has {n} trials; a sweep runs at most {MAX_TRIALS}")
        objective = self.objective or DEFAULT_OBJECTIVE[self.family]
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        object.__setattr__(self, "objective", objective)
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) or not 0 <= self.tolerance < 1:
            raise ValueError(f"tolerance must be a fraction from 0 to 1 (0.01 = 1 point), got {self.tolerance!r}")
        if self.max_concurrent is not None and (type(self.max_concurrent) is not int or self.max_concurrent < 1):
            raise ValueError(f"max_concurrent must be a positive whole number, got {self.max_concurrent!r}")
        if type(self.cpus_per_trial) is not int or self.cpus_per_trial < 1:
            raise ValueError(f"cpus_per_trial must be a positive whole number, got {self.cpus_per_trial!r}")
        g = self.gpus_per_trial
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (0 < g <= 1 or float(g).is_integer() and g > 0):
            raise ValueError(f"gpus_per_trial must be a fraction in (0, 1] or a whole number, got {g!r}")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"name must be text, got {self.name!r}")
        for cfg in self.trial_configs():   # every trial's settings, checked by its own task's rules
            validate_config(self.task, cfg)

    @property
    def task(self) -> str:
        return FAMILIES[self.family]["task"]

    @property
    def axes(self) -> tuple[str, str]:
        return FAMILIES[self.family]["axes"]

    def points(self) -> list[tuple]:
        a, b = self.axes
        return grid(self.grid[a], self.grid[b])

    def trial_configs(self) -> list[dict]:
        base = {"variant": self.variant, "student": self.student, "subset": self.subset, "device": self.device,
                "epochs": self.epochs, "seed": self.seed}
        return [trial_config(self.family, base, x, y) for x, y in self.points()]

    def describe(self, name_of) -> str:
        a, b = self.axes
        return (f"Sweep {name_of(self.variant)}: {FAMILIES[self.family]['title'].split(': ')[1]} "
                f"({len(self.grid[a])} × {len(self.grid[b])} = {len(self.points())} trials)")


@register_task("sweep", SweepJobConfig, title="Sweep")
def run_sweep(ctx: TaskContext, cfg: SweepJobConfig) -> TaskOutcome:
    """Run a task over a grid of settings and keep the best trial as a variant. Trials run in
    parallel with Ray Tune on the Ray runner, one after another otherwise."""
    ctx.on_progress(0.0, "loading the parent and its validation split")
    parent = open_parent(ctx, cfg.variant)
    reference_val = accuracy(parent.model, parent.data.val)
    axes, configs = cfg.axes, cfg.trial_configs()
    params = [dict(zip(axes, p, strict=True)) for p in cfg.points()]
    refs = [cfg.variant] + ([cfg.student] if cfg.family == "distill" and not is_model_name(cfg.student) else [])
    on_ray = ctx.fanout is not None
    parcel = variants_parcel(ctx.workspace, refs, data_root=None if on_ray else ctx.workspace.root)
    mode = "ray_tune" if on_ray else "sequential"
    ctx.on_event({"stage": "sweep", "kind": "start", "family": cfg.family, "axes": list(axes),
                  "labels": list(FAMILIES[cfg.family]["labels"]), "objective": cfg.objective,
                  "tolerance": cfg.tolerance, "reference_val_accuracy": reference_val, "mode": mode,
                  "parent": parent.variant.id, "trials": [{"trial": i, "params": p} for i, p in enumerate(params)]})
    ctx.log(f"sweep of {len(configs)} {cfg.task} trials over {' × '.join(axes)} from {parent.variant.name}; "
            + ("in parallel with Ray Tune" if on_ray else "one after another in this process")
            + f"; parent val acc {reference_val:.4f}")
    progress = [0.0] * len(configs)
    lock = threading.Lock()
    results: dict[int, TrialResult] = {}

    def trial_progress(i: int, p: float, msg: str) -> None:
        with lock:
            progress[i] = max(progress[i], min(p, 1.0))
            overall = sum(progress) / len(progress)
        ctx.on_event({"stage": "sweep", "kind": "trial_progress", "trial": i, "progress": p, "message": msg})
        ctx.on_progress(0.02 + 0.9 * overall, f"trial {i + 1}/{len(configs)} {_label(params[i])}: {msg}")

    leader: list[TrialResult] = []   # the best trial so far: the only one whose bytes are kept

    def trial_done(r: TrialResult) -> None:
        r.params = params[r.trial]
        results[r.trial] = r
        # pick_best is a total order, so the best of (leader, r) is the best so far; the loser's
        # bytes go now (16 trials of a large model must not all sit in memory)
        b, _ = pick_best(leader + [r], cfg.objective, reference_val=reference_val, tolerance=cfg.tolerance)
        for t in leader + [r]:
            if t is not b:
                t.saved = None
        leader[:] = [b] if b is not None else []
        trial_progress(r.trial, 1.0, r.state)
        ctx.on_event({"stage": "sweep", "kind": "trial", **r.row()})
        acc = r.metrics.get("val_accuracy")
        ctx.log(f"trial {r.trial + 1} {_label(r.params)}: {r.state}"
                + (f", val acc {acc:.4f}" if acc is not None else "") + (f" ({r.error})" if r.error else "")
                + f", {r.seconds:.1f} s on {r.node}")

    t0 = time.perf_counter()
    if on_ray:
        ctx.fanout.sweep_trials(parcel, cfg.task, configs, device=cfg.device, gpus_per_trial=cfg.gpus_per_trial,
                                cpus_per_trial=cfg.cpus_per_trial, max_concurrent=cfg.max_concurrent,
                                on_progress=trial_progress, on_done=trial_done, should_stop=ctx.should_stop)
    else:
        for i, config in enumerate(configs):
            if ctx.should_stop():
                raise Cancelled(f"sweep cancelled with {i} of {len(configs)} trials finished")
            out = run_trial(parcel, cfg.task, config, should_stop=ctx.should_stop,
                            on_progress=lambda p, m, i=i: trial_progress(i, p, m))
            trial_done(TrialResult(i, params[i], out["state"], out["metrics"], round(out["seconds"], 3), out["node"],
                                   out["error"], out["saved"]))
    wall = time.perf_counter() - t0
    rows = [results[i] for i in sorted(results)]
    best, why = pick_best(rows, cfg.objective, reference_val=reference_val, tolerance=cfg.tolerance)
    variant_id = None
    if best is not None:
        ctx.on_progress(0.95, f"storing the best trial ({_label(best.params)})")
        s = best.saved
        note = f"Best of {len(rows)} sweep trials ({_label(best.params)}): {why}."
        draft = VariantDraft(name=unique_name(ctx.workspace, cfg.name or f"{s['name']} [best of sweep]"),
                             dataset=s["dataset"], arch=s["arch"], recipe=s["recipe"],
                             metrics={**s["metrics"], **ctx.load_context()},   # other jobs running (a trial cannot see them)
                             kind=s["kind"], weights=s["weights"], format=s["format"], parent_id=s["parent_id"],
                             notes=(s["notes"] + " " + note).strip())
        variant_id = ctx.save(draft).id
        ctx.log(f"saved variant {variant_id}: {note}")
    result = {"family": cfg.family, "axes": list(axes), "labels": list(FAMILIES[cfg.family]["labels"]),
              "objective": cfg.objective, "tolerance": cfg.tolerance, "reference_val_accuracy": reference_val,
              "parent": parent.variant.id, "parent_name": parent.variant.name, "mode": mode,
              "wall_seconds": round(wall, 3), "trials": [r.row() for r in rows],
              "best_trial": best.trial if best else None, "why": why, "variant_id": variant_id,
              "config": cfg.to_dict()}
    ctx.on_event({"stage": "sweep", "kind": "result", "result": result})
    if best is None:
        raise RuntimeError(f"every trial of the sweep failed: {rows[0].error if rows else 'no trial ran'}")
    return TaskOutcome(variant_id=variant_id, result=result)


def _label(params: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in params.items())


def sweep_result(job, events: list[dict] | None = None) -> dict | None:
    """A sweep's result: its stored one, else a partial one from its events (for a live table)."""
    if getattr(job, "result", None):
        return job.result
    start, rows, live = None, {}, {}
    for e in events or []:
        if e.get("stage") != "sweep":
            continue
        if e["kind"] == "result":
            return e["result"]
        if e["kind"] == "start":
            start = e
        elif e["kind"] == "trial":
            rows[e["trial"]] = {k: v for k, v in e.items() if k not in ("stage", "kind")}
        elif e["kind"] == "trial_progress":
            live[e["trial"]] = e["progress"]
    if start is None:
        return None
    trials = [rows.get(t["trial"]) or {**t, "state": "running" if t["trial"] in live else "queued", "metrics": {},
                                        "progress": live.get(t["trial"], 0.0)} for t in start["trials"]]
    keep = ("family", "axes", "labels", "objective", "tolerance", "reference_val_accuracy", "mode", "parent")
    return {**{k: start.get(k) for k in keep}, "trials": trials, "best_trial": None, "partial": True}



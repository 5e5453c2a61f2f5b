"""Measure a stored variant again ("measure again" in the UI, `eval` on the CLI): every metric, or
only its latency, on the model decoded from its file. A child is timed together with its parent,
alternately, so the ratio between them compares two timings taken the same way, in one call."""
from __future__ import annotations

from dataclasses import dataclass

from core.base.config import DictConfig
from core.base.ratios import RUNTIMES
from core.compress.quant.quantize import runs_on_cpu_only
from core.measure.metrics import evaluate
from core.measure.speed import default_runtimes
from core.tasks.common import dataset_of
from core.tasks.registry import TaskContext, TaskOutcome, register_task

WHAT = ("all", "latency")
RUNTIME_CHOICES = ("all", *RUNTIMES)


@dataclass(frozen=True)
class MeasureJobConfig(DictConfig):
    """Measure a variant again: all metrics, or only latency (timed with its parent)."""

    variant: str
    what: str = "all"
    device: str = "auto"
    runtime: str = "all"          # which runtime to time (a key of RUNTIMES), or all of them

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the variant to measure")
        if self.what not in WHAT:
            raise ValueError(f"what must be one of {', '.join(WHAT)}, got {self.what!r}")
        if self.runtime not in RUNTIME_CHOICES:
            raise ValueError(f"runtime must be one of {', '.join(RUNTIME_CHOICES)}, got {self.runtime!r}")

    def describe(self, name_of) -> str:
        return f"Measure {name_of(self.variant)} again ({'latency' if self.what == 'latency' else 'all metrics'})"


def is_latency_key(key: str) -> bool:
    """The keys a latency measurement writes (core.measure.speed), in every runtime."""
    return ("latency" in key or key in ("device", "other_jobs_while_measured")
            or any(key in (rt.device_key, f"{rt.prefix}model", f"{rt.prefix}unavailable") for rt in RUNTIMES.values()
                   if rt.prefix))


def _runtimes(cfg: MeasureJobConfig) -> tuple[str, ...]:
    return default_runtimes() if cfg.runtime == "all" else (cfg.runtime,)


@register_task("measure", MeasureJobConfig, title="Measure again")
def run_measure(ctx: TaskContext, cfg: MeasureJobConfig) -> TaskOutcome:
    """Measure a variant's stored file again and update its metrics."""
    ws = ctx.workspace
    v = ws.get_variant(cfg.variant)
    data = dataset_of(v, workspace_root=ws.root)
    model = ws.load_model(v)
    reference = None
    if v.parent_id:
        parent = ws.get_variant(v.parent_id)
        if parent.dataset == v.dataset:
            reference = ws.load_model(parent)
    ctx.on_progress(0.1, f"measuring {v.name}")
    size = ws.weights_path(v).stat().st_size
    device = "cpu" if runs_on_cpu_only(v) else cfg.device    # int8 kernels exist on the CPU only
    runtimes = _runtimes(cfg)
    m = evaluate(model, data.test, data.info.input_shape, device=device, size_bytes=size,
                 reference=reference, runtimes=runtimes).to_dict() | ctx.load_context()
    if cfg.what == "latency":
        m = {k: val for k, val in m.items() if is_latency_key(k)}
    if "torch" not in runtimes:   # evaluate's fixed fields: not measured this time, so not overwritten
        for k in ("latency_ms_b1", "latency_ms_b64", "device"):
            m.pop(k, None)
    m |= {"latency_busy": False, "latency_other_jobs": 0}   # legacy flags of figures taken before the lane
    if reference is None:   # no paired parent timing now: drop a stale one rather than mix two calls
        m |= {f"reference_{rt.prefix}latency_ms_b{b}": None for rt in RUNTIMES.values() for b in (1, 64)}
    v = ws.update_variant(v.id, metrics=m)
    ctx.log(f"measured {v.id} on {v.metrics.get('device')}: " + "; ".join(
        f"{title} batch {b} {_ms(v.metrics.get(f'{p}latency_ms_b{b}'))}"
        for title, p in ((rt.title, rt.prefix) for rt in RUNTIMES.values()) for b in (1, 64)))
    return TaskOutcome(variant_id=v.id, result={"metrics": m})


def _ms(x) -> str:
    return f"{x:.3f} ms" if isinstance(x, (int, float)) and x == x else "not measurable now"

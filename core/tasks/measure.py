"""Measure a stored variant again ("measure again" in the UI, `eval` on the CLI): every metric, or
only its latency, on the model decoded from its file. A child is timed together with its parent,
alternately, so the ratio between them compares two timings taken the same way, in one call."""
from __future__ import annotations

from dataclasses import dataclass

from core.base.config import DictConfig
from core.compress.quant.quantize import runs_on_cpu_only
from core.measure.metrics import evaluate
from core.tasks.common import dataset_of
from core.tasks.registry import TaskContext, TaskOutcome, register_task

WHAT = ("all", "latency")


@dataclass(frozen=True)
class MeasureJobConfig(DictConfig):
    """Measure a variant again: all metrics, or only latency (timed with its parent)."""

    variant: str
    what: str = "all"
    device: str = "auto"

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the variant to measure")
        if self.what not in WHAT:
            raise ValueError(f"what must be one of {', '.join(WHAT)}, got {self.what!r}")

    def describe(self, name_of) -> str:
        return f"Measure {name_of(self.variant)} again ({'latency' if self.what == 'latency' else 'all metrics'})"


LATENCY_KEYS = ("latency_ms_b1", "latency_ms_b64", "latency_ms_b1_iqr", "latency_ms_b64_iqr", "latency_other_cores",
                "latency_busy", "latency_other_jobs", "latency_measured_at", "reference_latency_ms_b1",
                "reference_latency_ms_b64", "device")


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
    m = evaluate(model, data.test, data.info.input_shape, device=device, size_bytes=size,
                 reference=reference).to_dict() | ctx.load_context()
    if cfg.what == "latency":
        m = {k: m[k] for k in LATENCY_KEYS if k in m}
    if reference is None:   # no paired parent timing now: drop a stale one rather than mix two calls
        m |= {"reference_latency_ms_b1": None, "reference_latency_ms_b64": None}
    v = ws.update_variant(v.id, metrics=m)
    ctx.log(f"measured {v.id} on {m.get('device')}: batch 1 {v.metrics['latency_ms_b1']:.3f} ms, "
            f"batch 64 {v.metrics['latency_ms_b64']:.3f} ms")
    return TaskOutcome(variant_id=v.id, result={"metrics": m})

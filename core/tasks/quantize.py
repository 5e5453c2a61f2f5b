"""Quantize a float variant into a child variant (every mode of `core.compress.quant.quantize`); QAT trains
with fake quantization first, on the one training loop, then converts to static int8."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.base.config import DictConfig
from core.compress.quant.preview import preview_quantize
from core.compress.quant.quantize import CPU_ONLY_MODES, QuantConfig, calibration_batches, prepare_static, quantize
from core.measure.training import TrainConfig, train_
from core.store.variants import file_metadata
from core.tasks.common import child_draft, existing_child, open_parent, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task


def qat_train_default() -> TrainConfig:
    """Fake-quant fine-tuning starts from a trained model: a small learning rate, no weight decay."""
    return TrainConfig(epochs=1, lr=1e-3, weight_decay=0.0, schedule="cosine")


@dataclass(frozen=True)
class QuantizeJobConfig(DictConfig):
    """Quantize a float variant into a child variant. `train` is used by mode qat only."""

    variant: str
    quant: QuantConfig = field(default_factory=QuantConfig)
    name: str | None = None
    device: str = "auto"          # where fp16/bf16/weight-only children are measured (int8: always the CPU)
    subset: int | None = None     # qat: train on this many training samples (None: all)
    train: TrainConfig = field(default_factory=lambda: qat_train_default())

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the float variant to quantize")
        object.__setattr__(self, "quant", QuantConfig.coerce(self.quant))
        if isinstance(self.train, dict):   # a partial dict (run quantize train.epochs=2) keeps QAT's defaults
            object.__setattr__(self, "train", TrainConfig.from_dict({**qat_train_default().to_dict(), **self.train}))
        object.__setattr__(self, "train", TrainConfig.coerce(self.train))
        if self.subset is not None and (type(self.subset) is not int or self.subset < 1):
            raise ValueError(f"subset must be a positive number of samples, got {self.subset!r}")

    def step(self) -> dict:
        """The recipe step this config adds to the child (QAT's training settings included)."""
        step = {"step": "quantize", **self.quant.to_dict()}
        if self.quant.mode == "qat":
            step["train"] = {k: v for k, v in self.train.to_dict().items() if k not in ("device", "log_every")}
            step["subset"] = self.subset
        return step

    def describe(self, name_of) -> str:
        return f"Quantize {name_of(self.variant)}: {self.quant.label()}"


def find_quantized(ws, parent_id: str, cfg: QuantizeJobConfig):
    """The child a previous run with exactly these settings made, or None."""
    return existing_child(ws, parent_id, cfg.step())


def measure_device(cfg: QuantizeJobConfig) -> str:
    """int8 kernels are CPU kernels (fbgemm/x86): those children are measured on the CPU."""
    return "cpu" if cfg.quant.mode in CPU_ONLY_MODES else cfg.device


@register_task("quantize", QuantizeJobConfig, title="Quantize")
def run_quantize(ctx: TaskContext, cfg: QuantizeJobConfig) -> TaskOutcome:
    """Quantize a float variant and store the child, measured on the full test split."""
    q = cfg.quant
    parent = open_parent(ctx, cfg.variant, subset=cfg.subset if q.mode == "qat" else None)
    calib = calibration_batches(parent.data.train, q.calib_batches)
    prepared = None
    if q.mode == "qat":
        ctx.on_progress(0.02, "preparing fake-quant modules")
        prepared = prepare_static(parent.model, q, calib[0], qat=True)
        train_(prepared, parent.data, TrainConfig.coerce({**cfg.train.to_dict(), "device": cfg.device}),
               on_event=ctx.train_listener("qat", (0.05, 0.8)), should_stop=ctx.should_stop)
        prepared.cpu()
    ctx.on_progress(0.82 if prepared is not None else 0.1, f"quantizing {parent.variant.name}: {q.label()}")
    qmodel, report = quantize(parent.model, q, calib, prepared_qat=prepared)
    ctx.on_event({"stage": "quantize", "kind": "report", "report": report.to_dict()})
    if report.warning:
        ctx.log("warning: " + report.warning)
    ctx.on_progress(0.85, "measuring on the full test split")
    name = unique_name(ctx.workspace, cfg.name or f"{parent.variant.name} | {q.label()}")
    quantized = sum(1 for r in report.coverage_after if r.action == "quantized")
    extra = {"quantized_layers": quantized, "layers": len(report.coverage_after),
             "weight_bits": {"fp16": 16, "bf16": 16, "weight-only": q.bits}.get(q.mode, 8),
             "logits_sqnr_db": round(report.logits_sqnr_db, 2), **ctx.load_context()}
    draft = child_draft(parent, qmodel, name=name, step=cfg.step(), device=measure_device(cfg),
                        notes=report.summary(), extra_metrics=extra, declared_kind=q.kind,
                        quant=q, float_model=parent.model)
    v = ctx.save(draft)
    ctx.log(report.summary())
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}, {v.metrics['size_bytes']} bytes")
    ctx.on_progress(1.0, f"saved {v.id}")
    return TaskOutcome(variant_id=v.id, result={"report": report.to_dict()})


def preview_child(ws, parent, model, config: QuantConfig, val_subset, calib, *, measure_speed: bool = True):
    """The in-page run of Save on `parent` (whose float model is `model`, not changed): the size is
    the length of the bytes Save would write, header (name, dataset, arch) included."""
    name = unique_name(ws, f"{parent.name} | {config.label()}")
    return preview_quantize(model, config, val_subset, calib, measure_speed=measure_speed,
                            metadata=lambda: file_metadata(name, parent.dataset, parent.arch))

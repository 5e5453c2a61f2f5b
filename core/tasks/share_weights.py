"""Deep Compression's last two stages as steps: `share_weights` (k-means codebooks per layer,
centroids fine-tuned; stored as codebook + packed codes + relative indices) and `entropy_code`
(the parent's codes and indices re-encoded with canonical Huffman: the same model, fewer bytes)."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from core.base.config import DictConfig
from core.base.kinds import derive_kind
from core.compress.quant.files import model_from_bytes
from core.compress.sharing.weight_sharing import apply_shared_, finetune_centroids_, shared_layers
from core.formats.encoding import decode as decode_file
from core.formats.shared import decode_shared, encode_shared, is_shared_file
from core.measure.metrics import accuracy, evaluate
from core.store.variants import VariantDraft, child_recipe, file_metadata
from core.tasks.common import check_subset_name_device, open_parent, seed_everything, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class ShareWeightsJobConfig(DictConfig):
    """Trained weight sharing of a float (usually pruned) variant: 2^bits_conv codes for conv
    layers, 2^bits_fc for linear ones (code 0 is the zero), centroids fine-tuned `epochs` epochs."""

    variant: str
    bits_conv: int = 8
    bits_fc: int = 5
    epochs: int = 1
    lr: float = 1e-4
    subset: int | None = None
    seed: int = 0
    device: str = "auto"
    name: str | None = None

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the float variant to share")
        for k in ("bits_conv", "bits_fc"):
            v = getattr(self, k)
            if type(v) is not int or not 1 <= v <= 8:
                raise ValueError(f"{k} must be a whole number from 1 to 8, got {v!r}")
        if type(self.epochs) is not int or self.epochs < 0:
            raise ValueError(f"epochs must be a whole number of at least 0, got {self.epochs!r}")
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if type(self.seed) is not int:
            raise ValueError(f"seed must be a whole number, got {self.seed!r}")
        check_subset_name_device(self)

    def step(self) -> dict:
        d = {"step": "share_weights", **self.to_dict()}
        d.pop("variant")
        d.pop("name")
        return d

    def describe(self, name_of) -> str:
        return f"Share weights of {name_of(self.variant)}: {self.bits_conv}-bit conv, {self.bits_fc}-bit fc codebooks"


@dataclass(frozen=True)
class EntropyCodeJobConfig(DictConfig):
    """Re-encode a weight-shared variant's codes and relative indices with canonical Huffman."""

    variant: str
    device: str = "auto"
    name: str | None = None

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the weight-shared variant")
        if self.name is not None and not isinstance(self.name, str):
            raise ValueError(f"name must be text, got {self.name!r}")
        if not isinstance(self.device, str) or (self.device not in ("auto", "cpu", "cuda")
                                                and not self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")

    def step(self) -> dict:
        return {"step": "entropy_code", "coding": "huffman"}

    def describe(self, name_of) -> str:
        return f"Entropy-code {name_of(self.variant)} (Huffman)"


def measure_file(parent, weights: bytes, *, name: str, step: dict, device: str, notes: str = "",
                 extra_metrics: dict | None = None) -> VariantDraft:
    """As `variants.measure_variant`, for bytes already encoded: decode them into a fresh module,
    measure THAT (accuracy on the full test split, the size of these bytes, latency with the parent)."""
    arch = parent.variant.arch
    decoded = model_from_bytes(arch, weights)
    metrics = evaluate(decoded, parent.data.test, parent.data.info.input_shape, device=device,
                       size_bytes=len(weights), reference=parent.model).to_dict()
    metrics.update(extra_metrics or {})
    kind = derive_kind(decoded, shrunk=bool(arch.get("edits")), simulated=True)
    return VariantDraft(name, parent.data.info.name, arch, child_recipe(parent.variant, step), metrics, kind, weights,
                        f"shared+{step.get('coding', 'packed')}", parent.variant.id, notes)


@register_task("share_weights", ShareWeightsJobConfig, title="Share weights")
def run_share_weights(ctx: TaskContext, cfg: ShareWeightsJobConfig) -> TaskOutcome:
    """k-means codebooks per layer (non-zero weights only), centroids fine-tuned; the child keeps
    the codebooks whose validation accuracy was best (before fine-tuning included)."""
    seed_everything(cfg.seed)
    ctx.on_progress(0.0, "loading data and model")
    parent = open_parent(ctx, cfg.variant, subset=cfg.subset)
    model = copy.deepcopy(parent.model).cpu().eval()
    ctx.on_progress(0.05, "clustering")
    layers = shared_layers(model, cfg.bits_conv, cfg.bits_fc)
    apply_shared_(layers)
    history = [{"epoch": 0, "val_accuracy": accuracy(model, parent.data.val)}]
    best = (history[0]["val_accuracy"], [s.codebook.clone() for s in layers])
    ctx.log(f"clustered {len(layers)} layers: val acc {best[0]:.4f}")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    for epoch in range(cfg.epochs):
        ctx.on_progress(0.1 + 0.7 * epoch / max(cfg.epochs, 1), f"fine-tuning centroids {epoch + 1}/{cfg.epochs}")
        finetune_centroids_(model, layers, parent.data.train, epochs=1, lr=cfg.lr, seed=cfg.seed + epoch,
                            device=device, should_stop=ctx.should_stop)
        acc = accuracy(model, parent.data.val)
        history.append({"epoch": epoch + 1, "val_accuracy": acc})
        ctx.on_event({"stage": "share_weights", "kind": "point", **history[-1]})
        ctx.log(f"centroid fine-tuning epoch {epoch + 1}: val acc {acc:.4f}")
        if acc > best[0]:
            best = (acc, [s.codebook.clone() for s in layers])
    for s, cb in zip(layers, best[1]):
        s.codebook = cb
    apply_shared_(layers)
    ctx.on_progress(0.85, "measuring on the full test split")
    name = unique_name(ctx.workspace, cfg.name or f"{parent.variant.name} | shared {cfg.bits_conv}/{cfg.bits_fc} bit")
    shared = {s.name: {"codebook": s.codebook, "codes": s.codes, "bits": s.bits} for s in layers}
    weights = encode_shared(model.state_dict(), shared, file_metadata(name, parent.variant.dataset, parent.variant.arch))
    draft = measure_file(parent, weights, name=name, step=cfg.step(), device=cfg.device,
                         notes="k-means codebooks, val acc by centroid fine-tuning epoch: "
                               + "; ".join(f"{h['epoch']}: {h['val_accuracy']:.2%}" for h in history),
                         extra_metrics={"val_accuracy": best[0], **ctx.load_context()})
    v = ctx.save(draft)
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}, {v.metrics['size_bytes']} bytes")
    ctx.on_progress(1.0, f"saved {v.id}")
    return TaskOutcome(variant_id=v.id, result={"history": history})


def reencode(data: bytes, metadata: dict[str, str], coding: str = "huffman") -> bytes:
    """A shared file's bytes re-encoded with `coding`: the decoded codebooks and codes are the same."""
    tensors, meta = decode_file(data)
    if not is_shared_file(meta):
        raise ValueError("not a weight-shared file: run share_weights first")
    state, parts = decode_shared(tensors, meta, with_codes=True)
    return encode_shared(state, parts, metadata, coding=coding)


@register_task("entropy_code", EntropyCodeJobConfig, title="Entropy-code")
def run_entropy_code(ctx: TaskContext, cfg: EntropyCodeJobConfig) -> TaskOutcome:
    """Huffman-code the parent's codes and relative indices; the model is bit-identical."""
    parent = open_parent(ctx, cfg.variant, float_only=False)
    data = ctx.workspace.weights_path(parent.variant).read_bytes()
    name = unique_name(ctx.workspace, cfg.name or f"{parent.variant.name} | Huffman")
    weights = reencode(data, file_metadata(name, parent.variant.dataset, parent.variant.arch))
    ctx.on_progress(0.3, "measuring on the full test split")
    draft = measure_file(parent, weights, name=name, step=cfg.step(), device=cfg.device,
                         notes=f"Huffman-coded: {len(data):,} -> {len(weights):,} bytes",
                         extra_metrics=ctx.load_context())
    v = ctx.save(draft)
    ctx.log(f"saved variant {v.id}: {len(data):,} -> {len(weights):,} bytes, test accuracy {v.metrics['accuracy']:.4f}")
    ctx.on_progress(1.0, f"saved {v.id}")
    return TaskOutcome(variant_id=v.id, result={"parent_bytes": len(data), "bytes": len(weights)})

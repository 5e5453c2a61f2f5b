"""Live experiments of the Learn lessons 1-3: which weights go, why 90% sparse is not faster, not
all layers are equal. Also the per-process caches every lesson experiment may use (`lesson_model`,
`lesson_val`): a model or a validation subset is loaded once, then each slider move costs only the
work it really changes."""
from __future__ import annotations

import functools

import plotly.graph_objects as go
import torch
import torch.nn as nn

from .. import viz
from ..data import Split, cached_dataset
from ..metrics import accuracy, channels_last_, count_params
from ..pruning import PruneConfig, prune
from ..pruning_masks import prunable_layers, prune_layer_to_
from ..pruning_preview import PREVIEW_VAL_SAMPLES, preview_subset
from ..units import fmt_sparsity
from ..workspace import Variant, VariantNotFound
from .registry import ExperimentResult, Metric, experiment

LESSON_VARIANT = "base-lenet5"
CURVE_AMOUNTS = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


# ---------------------------------------------------------------- shared caches (read-only objects)

def lesson_variant(ws, variant_id: str = LESSON_VARIANT) -> Variant:
    """The shipped variant a lesson runs on; a clear ValueError when the workspace lacks it."""
    try:
        return ws.get_variant(variant_id)
    except VariantNotFound:
        raise ValueError(f"this lesson needs the shipped baseline {variant_id!r}, which is not in the workspace "
                         f"{ws.root}: restore it on the Model page (Restore shipped baselines) or run "
                         "`python -m core restore-baselines`") from None


@functools.lru_cache(maxsize=8)
def _model(root: str, variant_id: str, created_at: float) -> nn.Module:
    from ..workspace import Workspace

    return Workspace(root, seed_baselines=False).load_model(variant_id).eval()


def lesson_model(ws, variant_id: str = LESSON_VARIANT) -> tuple[Variant, nn.Module]:
    """(variant, model), the model loaded once per process and SHARED: never change it (copy it)."""
    v = lesson_variant(ws, variant_id)
    return v, _model(str(ws.root), v.id, v.created_at)


@functools.lru_cache(maxsize=4)
def lesson_val(dataset: str, n: int = PREVIEW_VAL_SAMPLES) -> Split:
    """The fixed validation subset of the Prune page's preview (same images every time)."""
    return preview_subset(cached_dataset(dataset).val, n)


def val_note(val: Split) -> str:
    return (f"Accuracy is measured on a fixed {len(val):,}-image validation subset (the Prune page's preview "
            "subset), not the full test set, so that each answer comes within about a second.")


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"


# ---------------------------------------------------------------- lesson 1: which weights go

def one_layer_config(layer: str, amount: float) -> PruneConfig:
    """L1 per-layer pruning of exactly one layer (the classifier too, when asked for): the Prune
    page builds this config from the workbench state below."""
    return PruneConfig(method="l1", scope="layer", amount=0.0, layer_amounts={layer: float(amount)}, exclude=())


def prune_page_state(layer_amounts: dict[str, float], exclude: list[str], amount: float = 0.0) -> dict:
    """Prune page widget values (ui/forms.py prune_form) for L1 per-layer amounts."""
    state = {"prune-method": "l1", "prune-scope": "layer", "prune-amount": amount, "prune-exclude": list(exclude),
             "prune-overrides": list(layer_amounts)}
    state.update({f"prune-layer-{n}": min(0.99, round(float(a), 2)) for n, a in layer_amounts.items()})
    return state


@functools.lru_cache(maxsize=32)
def _layer_curve(root: str, variant_id: str, created_at: float, dataset: str, layer: str) -> tuple:
    """Val-subset accuracy at CURVE_AMOUNTS when only `layer` is pruned (one private copy, the
    layer restored after each point, as the sensitivity scan does)."""
    m = channels_last_(_private_copy(_model(root, variant_id, created_at)))
    mod = dict(m.named_modules())[layer]
    original = mod.weight.detach().clone()
    val = lesson_val(dataset)
    out = []
    with torch.no_grad():
        for a in CURVE_AMOUNTS:
            prune_layer_to_(mod, "l1", a)
            out.append(accuracy(m, val))
            mod.weight.data.copy_(original)
    return tuple(out)


def _private_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def _curve_figure(layer: str, amounts, accs, point: tuple[float, float], dense: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(amounts), y=list(accs), mode="lines+markers", name=f"{layer} alone",
                               line={"color": viz.KEPT_COLOR}, hovertemplate="%{x:.0%}: %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="your setting",
                             marker={"color": viz.PRUNED_COLOR, "size": 14, "symbol": "diamond"},
                             hovertemplate="%{x:.0%}: %{y:.2%}<extra></extra>"))
    fig.add_hline(y=dense, line_dash="dot", line_color=viz.BEFORE_COLOR, annotation_text="unpruned")
    fig.update_layout(title=f"validation accuracy when only {layer} is pruned",
                      xaxis={"title": f"sparsity of {layer}", "tickformat": ".0%", "range": [-0.02, 1.01]},
                      yaxis={"title": "validation-subset accuracy", "tickformat": ".0%"}, height=380)
    return fig


@experiment("prune_one_layer")
def prune_one_layer(ws, params: dict) -> ExperimentResult:
    """Magnitude (L1) pruning of one layer of base-lenet5: heatmap, histogram, accuracy curve."""
    v, model = lesson_model(ws)
    names = [n for n, _ in prunable_layers(model)]
    layer = params.get("layer", "fc1")
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not a prunable layer of {v.name}; choose one of {', '.join(names)}")
    amount = float(params.get("amount", 0.5))
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    val = lesson_val(v.dataset)
    curve = _layer_curve(str(ws.root), v.id, v.created_at, v.dataset, layer)
    dense = curve[0]
    pruned, report = prune(model, one_layer_config(layer, amount))
    acc = accuracy(channels_last_(pruned), val)
    row = report.layer(layer)
    before_w = dict(model.named_modules())[layer].weight.detach()
    after_w = dict(pruned.named_modules())[layer].weight.detach()
    params_all, nonzero_all = count_params(pruned)
    figures = [
        viz.weight_heatmap(after_w, title=f"{layer} after pruning {amount:.0%} (red: removed)", max_cells=(100, 200)),
        viz.weight_histogram(before_w, after_w, title=f"{layer}: weight values before / after"),
        _curve_figure(layer, CURVE_AMOUNTS, curve, (row.sparsity_after, acc), dense),
    ]
    metrics = [
        Metric("Sparsity of " + layer, fmt_sparsity(row.sparsity_after),
               help=f"{row.weights_before - row.nonzero_after:,} of {row.weights_before:,} weights are zero"),
        Metric("Sparsity of the model", fmt_sparsity(1 - nonzero_all / params_all),
               help=f"zeros among all {params_all:,} parameters (weights and biases of every layer)"),
        Metric("Val. accuracy", f"{acc:.2%}", _pp(acc - dense),
               help=f"on the fixed {len(val):,}-image validation subset; unpruned {dense:.2%}"),
    ]
    threshold = float(before_w.abs().flatten().kthvalue(max(1, round(amount * before_w.numel())))[0]) if amount else 0.0
    notes = [val_note(val),
             f"Pruned: **{layer}** only, L1 magnitude. Weights with |w| ≤ {threshold:.4g} are now zero "
             f"({row.weights_before - row.nonzero_after:,} of {row.weights_before:,}).",
             "The curve's points are measured once per layer (the same subset) and kept for this process; "
             "the diamond is your setting, measured now."]
    state = prune_page_state({layer: amount}, exclude=[])
    return ExperimentResult(figures=figures, metrics=metrics, notes=notes,
                            workbench={"page": "prune", "variant": v.id, "state": state})

"""Live experiment of the Learn lesson 6 (recovery).

`recovery_curve`: accuracy right after magnitude pruning and after each fine-tuning epoch, with
the masks held fixed and without them (recorded by RECORDINGS), next to a live pruning of the same
model and, on request, one live fine-tuning epoch on a small subset.

Models and data subsets are cached per process (functools.lru_cache, keyed by the workspace root,
the variant id and its creation time); nothing cached is ever changed.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import plotly.graph_objects as go
import torch
import torch.nn as nn

from core.compress.pruning.masks import nonzero_count, prunable_layers
from core.compress.pruning.prune import PruneConfig, prune
from core.data.datasets import cached_dataset
from core.lessons.common import (
    BEFORE_COLOR,
    KEPT_COLOR,
    LIVE_COLOR,
    LIVE_SUBSET,
    PRUNED_COLOR,
    RECORD_SCRIPT,
    RECOVERY_LR,
    cached_model,
    dense_val_accuracy,
    finetune_epochs,
    lesson_val,
    lesson_variant,
    live_train_subset,
    load_recording,
    number,
    recorded_note,
    recovery_train_config,
    tidy,
    weights_digest,
)
from core.lessons.registry import ExperimentResult, Metric, experiment
from core.measure.metrics import accuracy
from core.store.workspace import Variant, Workspace
from core.viz.charts import two_line_title

RECOVERY_AMOUNTS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))     # 0.5 ... 0.95, the lesson's slider
RECOVERY_EPOCHS = 3
RECOVERY_SUBSET = 10_000     # training images per recorded epoch
RECOVERY_RECORDING = "recovery.json"


def recovery_prune_config(amount: float) -> PruneConfig:
    """L1 magnitude, one global ranking, the classifier left alone: the Prune page's defaults."""
    return PruneConfig(method="l1", amount=amount, scope="global")


def pruned_sparsity(model: nn.Module, names: list[str]) -> float:
    """Zeros among the weights of the pruned layers `names` (a masked layer's weight is orig * mask)."""
    total = zeros = 0
    for n, m in prunable_layers(model):
        if n in names:
            total += m.weight.numel()
            zeros += m.weight.numel() - nonzero_count(m)
    return zeros / total if total else 0.0


@functools.lru_cache(maxsize=12)
def _pruned(root: str, variant_id: str, created_at: float, dataset: str, amount: float) -> tuple[nn.Module, list, float]:
    """(pruned model, names of the pruned layers, its val-subset accuracy). Read-only."""
    model, report = prune(cached_model(root, variant_id, created_at), recovery_prune_config(amount))
    names = [layer.name for layer in report.layers if layer.target is not None]
    return model, names, accuracy(model, lesson_val(dataset))


def record_recovery(ws: Workspace) -> dict:
    """Per amount of the lesson's slider: accuracy (the 1,000-image validation subset; the full test
    split right after pruning and at the end) and sparsity right after pruning and after each of
    RECOVERY_EPOCHS fine-tuning epochs on RECOVERY_SUBSET training images, with masks and without."""
    v = lesson_variant(ws)
    ds = cached_dataset(v.dataset)
    vs = lesson_val(v.dataset)
    data = dataclasses.replace(ds, train=ds.train.subset(RECOVERY_SUBSET, seed=0), val=vs)
    base = ws.load_model(v).eval()
    out = {"variant": v.id, "weights_sha256": weights_digest(ws, v), "dataset": v.dataset,
           "amounts": list(RECOVERY_AMOUNTS), "epochs": RECOVERY_EPOCHS,
           "train_subset": RECOVERY_SUBSET, "val_subset": len(vs), "lr": RECOVERY_LR,
           "prune": recovery_prune_config(0.5).to_dict() | {"amount": "per row"},
           "finetune": recovery_train_config(RECOVERY_EPOCHS).to_dict(),
           "dense": {"val_accuracy": accuracy(base, vs), "test_accuracy": accuracy(base, ds.test)}, "rows": []}
    for amount in RECOVERY_AMOUNTS:
        pruned, report = prune(base, recovery_prune_config(amount))
        names = [layer.name for layer in report.layers if layer.target is not None]
        row = {"amount": amount, "pruned_test_accuracy": accuracy(pruned, ds.test)}
        for arm, masks in (("masks", True), ("no_masks", False)):
            points = [{"epoch": 0, "val_accuracy": accuracy(pruned, vs), "sparsity": pruned_sparsity(pruned, names)}]

            def on_epoch(epoch, model, val_accuracy, points=points, names=names):
                points.append({"epoch": epoch, "val_accuracy": val_accuracy, "sparsity": pruned_sparsity(model, names)})
            model, _ = finetune_epochs(pruned, names, data, RECOVERY_EPOCHS, masks=masks, on_epoch=on_epoch)
            row[arm] = {"points": points, "test_accuracy": accuracy(model, ds.test)}
        out["rows"].append(row)
    return out


def live_epoch(ws: Workspace, v: Variant, amount: float) -> dict:
    """One fine-tuning epoch, live, on LIVE_SUBSET training images of the model pruned at `amount`,
    masks held fixed: val-subset accuracy and pruned-layer sparsity before and after."""
    pruned, names, acc0 = _pruned(str(ws.root), v.id, v.created_at, v.dataset, amount)
    ds = cached_dataset(v.dataset)
    data = dataclasses.replace(ds, train=live_train_subset(v.dataset), val=lesson_val(v.dataset))
    zeros = _zero_masks(pruned, names)
    t0 = time.perf_counter()
    model, acc = finetune_epochs(pruned, names, data, 1, masks=True)     # acc: on data.val, measured by the loop
    out = {"accuracy_before": acc0, "accuracy": acc, "sparsity_before": pruned_sparsity(pruned, names),
           "sparsity": pruned_sparsity(model, names), "seconds": time.perf_counter() - t0,
           "at": time.strftime("%H:%M:%S UTC", time.gmtime()),
           "zeros_kept": all(bool(torch.all(m.weight.detach()[zeros[n]] == 0))
                             for n, m in prunable_layers(model) if n in names)}
    return out


def _zero_masks(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() == 0 for n, m in prunable_layers(model) if n in names}


def _row_for(rec: dict, amount: float) -> dict:
    for row in rec["rows"]:
        if abs(row["amount"] - amount) < 1e-6:
            return row
    have = ", ".join(f"{r['amount']:g}" for r in rec["rows"])
    raise ValueError(f"no recorded curve at amount {amount:g} (recorded: {have}); record again with "
                     f"`{RECORD_SCRIPT} --only {RECOVERY_RECORDING}`")


def _recovery_chart(rec: dict | None, amount: float, acc0: float, dense: float, live: dict | None,
                    n_val: int, variant: str) -> go.Figure:
    fig = go.Figure()
    for row in rec["rows"] if rec else []:
        pts = row["masks"]["points"]
        mine = abs(row["amount"] - amount) < 1e-6
        fig.add_scatter(x=[p["epoch"] for p in pts], y=[p["val_accuracy"] for p in pts], mode="lines+markers",
                        name=f"{row['amount']:.0%} pruned, masks (recorded)" if mine else f"{row['amount']:.0%}",
                        showlegend=mine, opacity=1.0 if mine else 0.3,
                        line={"color": KEPT_COLOR if mine else BEFORE_COLOR, "width": 3 if mine else 1},
                        hovertemplate=f"{row['amount']:.0%} pruned, epoch " + "%{x}: %{y:.2%}<extra></extra>")
    if rec:
        pts = _row_for(rec, amount)["no_masks"]["points"]
        fig.add_scatter(x=[p["epoch"] for p in pts], y=[p["val_accuracy"] for p in pts], mode="lines+markers",
                        name="no masks (recorded)", line={"color": PRUNED_COLOR, "dash": "dot"})
    xs, ys = [0], [acc0]
    if live is not None:
        xs, ys = [0, 1], [live["accuracy_before"], live["accuracy"]]
    fig.add_scatter(x=xs, y=ys, mode="markers+lines", name="live" + (
        f" (1 epoch, {LIVE_SUBSET:,} images)" if live else " (right after pruning)"),
        marker={"symbol": "star", "size": 16, "color": LIVE_COLOR}, line={"color": LIVE_COLOR, "dash": "dash"})
    fig.add_hline(y=dense, line_dash="dot", line_color=BEFORE_COLOR, annotation_text="before pruning")
    fig.update_layout(xaxis={"title": "fine-tuning epoch (0: just pruned)", "dtick": 1,
                             "range": [-0.2, (rec["epochs"] if rec else 1) + 0.2]},
                      yaxis={"title": "accuracy (validation subset)", "tickformat": ".0%"},
                      title=two_line_title("Accuracy right after pruning and after each fine-tuning epoch",
                                           f"L1 global pruning of {variant}"
                                           + ("; the other amounts faint" if rec else "")))
    return tidy(fig, 420)


def _sparsity_chart(row: dict | None, amount: float, live: dict | None) -> go.Figure:
    fig = go.Figure()
    for arm, label, color, dash in (("masks", "masks fixed", KEPT_COLOR, "solid"),
                                    ("no_masks", "no masks", PRUNED_COLOR, "dot")):
        if row is None:
            break
        pts = row[arm]["points"]
        fig.add_scatter(x=[p["epoch"] for p in pts], y=[p["sparsity"] for p in pts], mode="lines+markers",
                        name=f"{label} (recorded)", line={"color": color, "dash": dash, "width": 3},
                        hovertemplate="epoch %{x}: %{y:.2%} zeros<extra>" + label + "</extra>")
    if live is not None:
        fig.add_scatter(x=[0, 1], y=[live["sparsity_before"], live["sparsity"]], mode="markers",
                        name="live epoch, masks", marker={"symbol": "star", "size": 16, "color": LIVE_COLOR})
    fig.update_layout(xaxis={"title": "fine-tuning epoch", "dtick": 1},
                      yaxis={"title": "zeros in the pruned layers", "tickformat": ".0%", "range": [0, 1]},
                      title=two_line_title("Why the masks must stay fixed",
                                           f"pruned to {amount:.0%}: without masks, the zeros grow back"))
    return tidy(fig)


def recovery_recording(ws: Workspace, v: Variant) -> tuple[dict | None, str | None]:
    """(the recorded curves, None) when they were measured on this workspace's `v`, else (None, why not)."""
    redo = f"`{RECORD_SCRIPT} --only {RECOVERY_RECORDING}`"
    rec = load_recording(RECOVERY_RECORDING)
    if rec is None:
        return None, f"The recorded curves (lessons/recorded/{RECOVERY_RECORDING}) are missing: record them with {redo}."
    if rec.get("variant") != v.id or rec.get("weights_sha256") != weights_digest(ws, v):
        return None, (f"The recorded curves were measured on the shipped {v.id}; this workspace's {v.id} holds other "
                      f"weights, so only the live part is shown. Re-record them for these weights with {redo}.")
    return rec, None


@experiment("recovery_curve")
def recovery_curve(ws: Workspace, params: dict) -> ExperimentResult:
    """Accuracy and sparsity after pruning and after each fine-tuning epoch, with and without masks."""
    amount = round(number(params, "amount", 0.5, 0.95, 0.9) * 20) / 20     # the recorded 5% steps
    run_live = params.get("live_epoch", False)
    if not isinstance(run_live, bool):
        raise ValueError(f"live_epoch must be true or false, got {run_live!r}")
    v = lesson_variant(ws)
    rec, missing = recovery_recording(ws, v)
    row = _row_for(rec, amount) if rec else None
    _, _, acc0 = _pruned(str(ws.root), v.id, v.created_at, v.dataset, amount)
    live = live_epoch(ws, v, amount) if run_live else None   # only in the run whose button was pressed
    dense = dense_val_accuracy(str(ws.root), v.id, v.created_at, v.dataset)
    n_val = len(lesson_val(v.dataset))
    metrics = [Metric("Right after pruning (live)", f"{acc0:.2%}", f"{100 * (acc0 - dense):+.2f} pt vs unpruned",
                      help=f"{v.name} pruned {amount:.0%} (L1, global) on this machine, measured on the "
                           f"{n_val:,}-image validation subset.")]
    table, notes = None, []
    if live is not None:
        metrics.append(Metric(f"Live epoch ({LIVE_SUBSET:,} images, masks fixed)", f"{live['accuracy']:.2%}",
                              f"{100 * (live['accuracy'] - live['accuracy_before']):+.2f} pt; sparsity "
                              f"{live['sparsity']:.1%} ({'unchanged' if live['zeros_kept'] else 'CHANGED'})",
                              help=f"Ran at {live['at']} in {live['seconds']:.1f} s."))
    notes.append(
        f"**Live**: {v.name} pruned {amount:.0%} (L1 magnitude, one global ranking, the classifier left alone) on "
        f"this machine; accuracy on the fixed {n_val:,}-image validation subset."
        + (f" The live epoch fine-tuned a copy for 1 epoch on {LIVE_SUBSET:,} training images (masks fixed) at "
           f"{live['at']} (a fixed seed: pressing again gives the same numbers)." if live else
           " Press the button for one live fine-tuning epoch."))
    if rec is not None:
        masked, free = row["masks"]["points"], row["no_masks"]["points"]
        n = rec["epochs"]
        metrics[1:1] = [
            Metric(f"After {n} epochs, masks fixed (recorded)", f"{masked[-1]['val_accuracy']:.2%}",
                   f"{100 * (masked[-1]['val_accuracy'] - masked[0]['val_accuracy']):+.2f} pt vs right after pruning",
                   help=f"{n} epochs on {rec['train_subset']:,} training images; the same validation subset."),
            Metric("Zeros left without masks (recorded)", f"{free[-1]['sparsity']:.1%}",
                   f"{100 * (free[-1]['sparsity'] - free[0]['sparsity']):+.1f} pt",
                   help=f"Sparsity of the pruned layers after the same {n} epochs without masks: every zero that "
                        "grows back is a weight the sparse file must store again, so the compression is lost.")]
        table = [{"epoch": a["epoch"], "accuracy, masks fixed": f"{a['val_accuracy']:.2%}",
                  "sparsity, masks fixed": f"{a['sparsity']:.1%}", "accuracy, no masks": f"{b['val_accuracy']:.2%}",
                  "sparsity, no masks": f"{b['sparsity']:.1%}"} for a, b in zip(masked, free)]
        notes += [
            f"**Recorded** curves: {n} epochs of SGD (lr {rec['lr']:g}, cosine decay) on {rec['train_subset']:,} "
            f"training images per amount, with the masks attached (`torch.nn.utils.prune`) and, for comparison, "
            f"without; accuracy on the same validation subset. On the full test split: unpruned "
            f"{rec['dense']['test_accuracy']:.2%}, right after pruning {row['pruned_test_accuracy']:.2%}, after {n} "
            f"epochs {row['masks']['test_accuracy']:.2%} with masks, {row['no_masks']['test_accuracy']:.2%} without "
            f"(but only {free[-1]['sparsity']:.1%} zeros left).",
            recorded_note(rec, "every curve marked recorded")]
    else:
        notes.append(missing)
    workbench = {"page": "prune", "variant": v.id, "state": {
        "prune-method": "l1", "prune-scope": "global", "prune-amount": amount, "prune-rec-steps": 1,
        "prune-rec-epochs": RECOVERY_EPOCHS, "prune-rec-lr": RECOVERY_LR, "prune-rec-subset": RECOVERY_SUBSET}}
    figures = [_recovery_chart(rec, amount, acc0, dense, live, n_val, v.id), _sparsity_chart(row, amount, live)]
    return ExperimentResult(figures=figures, metrics=metrics, table=table, notes=notes, recorded=rec is not None,
                            workbench=workbench)


RECORDINGS = {RECOVERY_RECORDING: record_recovery}

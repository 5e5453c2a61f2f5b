"""Live experiments of the Learn lessons 5-6: dark knowledge, recovery.

`teacher_temperature` (lesson 5): the shipped LeNet-5's softmax at temperature T on one of a few
fixed test images, live, beside the distillation-vs-scratch result of bench/distill_bench.py
(recorded). `recovery_curve` (lesson 6): accuracy right after magnitude pruning and after each
fine-tuning epoch, with the masks held fixed and without them (recorded by RECORDINGS), next to a
live pruning of the same model and, on request, one live fine-tuning epoch on a small subset.

Models, data subsets and the teacher's logits are cached per process (functools.lru_cache, keyed
by the workspace root, the variant id and its creation time); nothing cached is ever changed.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math
import shlex
import subprocess
import time
from pathlib import Path

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data import Split, cached_dataset
from ..metrics import accuracy
from ..pruning import PruneConfig, prune
from ..pruning_masks import attach_masks_from_zeros_, nonzero_count, prunable_layers, remove_masks_
from ..pruning_preview import preview_subset
from ..training import TrainConfig, train_
from ..workspace import Variant, VariantNotFound, Workspace
from .registry import ExperimentResult, Metric, experiment, load_recording, recorded_note, weights_digest

REPO = Path(__file__).resolve().parents[2]
RECORD_SCRIPT = ".venv/bin/python scripts/record_lessons.py"
TEACHER = "base-lenet5"
KEPT_COLOR, PRUNED_COLOR, BEFORE_COLOR, LIVE_COLOR = "#4f8bf9", "#e4572e", "#9aa5b1", "#2a9d8f"


# ---------------------------------------------------------------- shared by lessons 5-7

def baseline(ws: Workspace, ref: str = TEACHER) -> Variant:
    """The shipped baseline `ref`, or a ValueError that says how to get it back."""
    try:
        return ws.get_variant(ref)
    except VariantNotFound:
        raise ValueError(f"this lesson runs on the shipped baseline {ref!r}, which is not in the workspace "
                         f"{ws.root}: bring it back with `python -m core restore-baselines`") from None


@functools.lru_cache(maxsize=8)
def load_cached(root: str, variant_id: str, created_at: float) -> nn.Module:
    """A variant's model, loaded once per process (keyed by when it was stored). Shared: never
    change it; `prune` and `finetune_epochs` work on copies."""
    return Workspace(root, seed_baselines=False).load_model(variant_id).eval()


@functools.lru_cache(maxsize=4)
def val_subset(dataset: str) -> Split:
    """The fixed 1,000-image validation subset the workbench's previews are measured on."""
    return preview_subset(cached_dataset(dataset).val)


def recorded(name: str) -> dict:
    """A shipped recording lessons/recorded/<name>, or a ValueError that says how to make it."""
    rec = load_recording(name)
    if rec is None:
        raise ValueError(f"the recorded result lessons/recorded/{name} is missing: record it with "
                         f"`{RECORD_SCRIPT} --only {name}`")
    return rec


def number(params: dict, key: str, lo: float, hi: float, default: float) -> float:
    """The control value `params[key]` as a float in [lo, hi], or a ValueError naming the control."""
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{key} must be a number from {lo:g} to {hi:g}, got {v!r}")
    return float(v)


def git_date(path: Path) -> str | None:
    """When `path` was last committed (UTC, minutes), or None outside a git checkout or when the
    file has changed since (its commit date would then not be the date of what it holds)."""
    env = {"TZ": "UTC", "PATH": "/usr/bin:/bin:/usr/local/bin"}
    try:
        changed = subprocess.run(["git", "status", "--porcelain", "--", str(path)], cwd=REPO, capture_output=True,
                                 text=True, timeout=10, env=env)
        out = subprocess.run(["git", "log", "-1", "--date=format-local:%Y-%m-%d %H:%M UTC", "--format=%cd", "--",
                              str(path)], cwd=REPO, capture_output=True, text=True, timeout=10, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    if changed.returncode != 0 or changed.stdout.strip():
        return None
    return out.stdout.strip() or None


def tidy(fig: go.Figure, height: int = 380) -> go.Figure:
    """Margins and a legend below the axis title: the page shows two charts a row, in presenter
    mode with larger type, so nothing may rely on a wide chart."""
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0})
    return fig


def two_line_title(main: str, detail: str) -> dict:
    return {"text": f"{main}<br><sup>{detail}</sup>", "font": {"size": 15}}


# ---------------------------------------------------------------- lesson 5: dark knowledge

IMAGE_CLASSES = ("Shirt", "T-shirt/top", "Pullover", "Coat", "Dress", "Sneaker", "Sandal", "Ankle boot")
TEMPERATURES = tuple(float(t) for t in np.arange(1.0, 20.01, 0.5))
DISTILL_BENCH = REPO / "bench" / "results" / "distill_bench.json"
DISTILL_RECORDING = "dark-knowledge.json"
SCAN = 2000     # test images searched for each class's first one the teacher gets right


@functools.lru_cache(maxsize=4)
def _teacher_images(root: str, variant_id: str, created_at: float, dataset: str) -> dict[str, dict]:
    """Per class name: the first test image of that class the teacher classifies correctly (its
    index, uint8 pixels [H, W] or [H, W, C], the teacher's logits). Read-only."""
    model = load_cached(root, variant_id, created_at)
    test = cached_dataset(dataset).test
    names = cached_dataset(dataset).info.class_names
    images, labels = test.images[:SCAN], test.labels[:SCAN]
    with torch.inference_mode():
        logits = model(test.normalize(images)).float()
    right = logits.argmax(1) == labels
    out = {}
    for c, name in enumerate(names):
        hits = torch.nonzero(right & (labels == c)).flatten()
        if len(hits):
            i = int(hits[0])
            px_ = images[i].permute(1, 2, 0).numpy()
            out[name] = {"index": i, "label": c, "pixels": px_[..., 0] if px_.shape[2] == 1 else px_,
                         "logits": logits[i].clone()}
    return out


def softened(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(z / T): the teacher's probabilities at temperature T (float64, sums to 1)."""
    return F.softmax(logits.double() / temperature, dim=-1)


def pct(p: float) -> str:
    """A probability for a student: '12.3%', and tiny ones as '0.004%' rather than '0.0%'."""
    if p == 0 or p >= 0.001:
        return f"{p:.1%}"
    return "< 0.0001%" if p < 1e-6 else f"{100 * p:.2g}%"


def entropy_bits(p: torch.Tensor) -> float:
    """-sum p log2 p: 0 bits for a certain answer, log2(classes) when all are equally likely."""
    p = p[p > 0]
    return float(-(p * torch.log2(p)).sum())


def _probabilities_chart(names, p1, pt, label: int, temperature: float, true_name: str) -> go.Figure:
    """Horizontal bars: ten class names stay readable in half a projector's width."""
    fig = go.Figure()
    fig.add_bar(y=list(names), x=p1.tolist(), orientation="h", name="T = 1 (plain softmax)",
                marker_color=BEFORE_COLOR, hovertemplate="%{y}: %{x:.2%}<extra>T = 1</extra>")
    colors = [PRUNED_COLOR if i == label else KEPT_COLOR for i in range(len(names))]
    fig.add_bar(y=list(names), x=pt.tolist(), orientation="h", name=f"T = {temperature:g}", marker_color=colors,
                hovertemplate="%{y}: %{x:.2%}<extra>T = " + f"{temperature:g}</extra>")
    fig.update_layout(barmode="group", bargap=0.25, yaxis={"autorange": "reversed"},
                      xaxis={"title": "probability", "tickformat": ".0%", "range": [0, 1.02]},
                      title=two_line_title(f"The teacher's probabilities for this {true_name}",
                                           f"softmax(z / T) at T = 1 and T = {temperature:g}; "
                                           f"the true class ({true_name}) in red"))
    return tidy(fig, 440)


def _image_figure(pixels: np.ndarray, index: int, true_name: str) -> go.Figure:
    fig = px.imshow(pixels, binary_string=True)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=two_line_title(f"Test image #{index}", f"true class: {true_name}"), height=320,
                      margin={"l": 10, "r": 10, "t": 60, "b": 10})
    return fig


def _flattening_chart(logits: torch.Tensor, temperature: float) -> go.Figure:
    ts = list(TEMPERATURES)
    ps = [softened(logits, t) for t in ts]
    k = len(logits)
    fig = go.Figure()
    fig.add_scatter(x=ts, y=[1 - float(p.max()) for p in ps], mode="lines", name="outside the top class",
                    line={"color": PRUNED_COLOR}, hovertemplate="T = %{x}: %{y:.1%}<extra>outside the top class</extra>")
    fig.add_scatter(x=ts, y=[entropy_bits(p) / math.log2(k) for p in ps], mode="lines",
                    name=f"entropy / max ({math.log2(k):.2f} bits)", line={"color": KEPT_COLOR},
                    hovertemplate="T = %{x}: %{y:.1%} of the maximum<extra>entropy</extra>")
    fig.add_vline(x=temperature, line_dash="dot", line_color=BEFORE_COLOR, annotation_text=f"T = {temperature:g}")
    fig.update_layout(xaxis={"title": "temperature T"}, yaxis={"title": "share", "tickformat": ".0%", "range": [0, 1]},
                      title=two_line_title("The same image at every temperature", "higher T: flatter probabilities"))
    return tidy(fig)


def _distill_chart(rec: dict) -> go.Figure:
    """Markers, not bars: the accuracy axis does not start at 0, and bars would exaggerate the gaps."""
    s = rec["settings"]
    rows = [("teacher", rec["teacher_accuracy"], None, BEFORE_COLOR),
            ("student, scratch", rec["scratch_mean"], rec["scratch_std"], PRUNED_COLOR),
            ("student, distilled", rec["distilled_mean"], rec["distilled_std"], KEPT_COLOR)]
    fig = go.Figure()
    for name, acc, std, color in rows:
        fig.add_scatter(x=[name], y=[acc], mode="markers+text", text=[f"  {acc:.2%}"], textposition="middle right",
                        marker={"size": 16, "color": color}, showlegend=False,
                        error_y={"type": "data", "array": [std], "visible": True} if std is not None else None,
                        hovertemplate=f"{name}: {acc:.2%}" + (f" ± {100 * std:.2f} pt" if std else "")
                                      + "<extra></extra>")
    lo = min(r[1] - 3 * (r[2] or 0) for r in rows) - 0.01
    hi = max(r[1] for r in rows) + 0.01
    fig.update_layout(yaxis={"title": "test accuracy", "tickformat": ".0%", "range": [lo, hi]},
                      xaxis={"range": [-0.4, len(rows) - 0.1]},      # room for the last label
                      title=two_line_title(f"Recorded: {rec['student']} with and without the teacher",
                                           f"{s['epochs']} epochs on {s['subset']:,} images, T = {s['temperature']:g}, "
                                           f"alpha = {s['alpha']:g}; mean ± std of {len(s['seeds'])} seeds; "
                                           "the axis does not start at 0"))
    return tidy(fig)


def bench_command(settings: dict) -> str:
    """The command line that reruns bench/distill_bench.py with these settings."""
    s = settings
    return (".venv/bin/python bench/distill_bench.py --seeds " + " ".join(str(x) for x in s["seeds"])
            + f" --epochs {s['epochs']} --subset {s['subset']} --temperature {s['temperature']:g}"
            f" --alpha {s['alpha']:g} --lr {s['lr']:g} --student {shlex.quote(s['student'])}")


def record_dark_knowledge(ws: Workspace) -> dict:
    """A small copy of bench/distill_bench.json (the distillation-vs-scratch result) with the date
    that file was committed and the command that reran the bench."""
    if not DISTILL_BENCH.is_file():
        raise ValueError(f"{DISTILL_BENCH.relative_to(REPO)} is missing: run `.venv/bin/python bench/distill_bench.py`")
    b = json.loads(DISTILL_BENCH.read_text())
    keep = ("teacher", "teacher_accuracy", "student", "scratch_mean", "scratch_std", "distilled_mean",
            "distilled_std", "gap_closed_mean", "gap_closed_per_seed", "device", "settings")
    out = {k: b[k] for k in keep}
    out["runs"] = [{k: r[k] for k in ("seed", "arm", "test_accuracy")} for r in b["runs"]]
    out["source"] = str(DISTILL_BENCH.relative_to(REPO))
    out["bench_date"] = git_date(DISTILL_BENCH) or time.strftime("%Y-%m-%d %H:%M UTC (the file's time, not committed)",
                                                                   time.gmtime(DISTILL_BENCH.stat().st_mtime))
    out["bench_command"] = bench_command(b["settings"])
    return out


@experiment("teacher_temperature")
def teacher_temperature(ws: Workspace, params: dict) -> ExperimentResult:
    """The teacher's softened probabilities on one test image (live) and distillation vs scratch (recorded)."""
    temperature = number(params, "temperature", 1.0, 20.0, 4.0)
    image = params.get("image", IMAGE_CLASSES[0])
    if image not in IMAGE_CLASSES:
        raise ValueError(f"image must be one of {', '.join(IMAGE_CLASSES)}; got {image!r}")
    v = baseline(ws)
    info = cached_dataset(v.dataset).info
    names = info.class_names
    if image not in names:
        raise ValueError(f"this lesson's images are Fashion-MNIST classes, but {v.name} was trained on {v.dataset} "
                         f"(classes: {', '.join(names)})")
    found = _teacher_images(str(ws.root), v.id, v.created_at, v.dataset)
    if image not in found:
        raise ValueError(f"{v.name} classifies none of the first {SCAN:,} test images of class {image!r} correctly")
    img = found[image]
    p1, pt = softened(img["logits"], 1.0), softened(img["logits"], temperature)
    order = torch.argsort(pt, descending=True).tolist()
    top, runner = order[0], order[1]
    outside_1, outside_t = 1 - float(p1.max()), 1 - float(pt.max())
    h1, ht = entropy_bits(p1), entropy_bits(pt)

    rec = recorded(DISTILL_RECORDING)
    gap = rec["gap_closed_mean"]
    vs_1 = temperature != 1.0      # the deltas compare with the plain softmax; at T = 1 there is nothing to compare
    figures = [_probabilities_chart(names, p1, pt, img["label"], temperature, image),
               _image_figure(img["pixels"], img["index"], image),
               _flattening_chart(img["logits"], temperature),
               _distill_chart(rec)]
    metrics = [
        Metric("Top class", f"{names[top]} {float(pt[top]):.1%}",
               help="The class the teacher ranks first, and its probability at this temperature."),
        Metric("Runner-up", f"{names[runner]} {pct(float(pt[runner]))}",
               help="The wrong class the teacher finds most similar: the dark knowledge a student learns from "
                    "soft targets and never from the label."),
        Metric("Probability outside the top class", pct(outside_t),
               f"{100 * (outside_t - outside_1):+.1f} pt vs T = 1" if vs_1 else None,
               help="1 - max(p): the mass the teacher spreads over the other classes."),
        Metric("Entropy", f"{ht:.2f} bits", f"{ht - h1:+.2f} bits vs T = 1" if vs_1 else None,
               help=f"-Σ p log2 p: 0 bits is a certain answer, log2 {len(names)} = {math.log2(len(names)):.2f} bits "
                    "is every class equally likely."),
        Metric("Gap closed (recorded)", f"{gap:.0%}",
               help="How much of the teacher-student gap distillation closed: (distilled - scratch) / (teacher - "
                    "scratch), mean over the seeds of bench/distill_bench.py."),
    ]
    table = [{"model": f"teacher: {rec['teacher']}", "test accuracy": f"{rec['teacher_accuracy']:.2%}",
              "seeds": "–", "gap closed": "–"},
             {"model": f"student {rec['student']}, from scratch (labels only)",
              "test accuracy": f"{rec['scratch_mean']:.2%} ± {100 * rec['scratch_std']:.2f} pt",
              "seeds": len(rec["settings"]["seeds"]), "gap closed": "0% (the reference)"},
             {"model": f"student {rec['student']}, distilled (teacher's soft targets + labels)",
              "test accuracy": f"{rec['distilled_mean']:.2%} ± {100 * rec['distilled_std']:.2f} pt",
              "seeds": len(rec["settings"]["seeds"]), "gap closed": f"{gap:.0%}"}]
    s = rec["settings"]
    notes = [
        f"**Live**: {v.name}'s logits on test image #{img['index']} of {info.title} (the first test image of class "
        f"{image} it gets right), softened as softmax(z / T), on this machine.",
        f"**Recorded**, not measured now (the chart and table of distillation against training from scratch): "
        f"`bench/distill_bench.py`, its result committed {rec['bench_date']}, run on {rec['device']}: "
        f"{s['epochs']} epochs on {s['subset']:,} training images, T = {s['temperature']:g}, alpha = {s['alpha']:g}, "
        f"lr {s['lr']:g}, seeds {', '.join(map(str, s['seeds']))}; the same initial weights and batch order in both "
        f"arms; test accuracy on the full test split. Rerun with `{rec['bench_command']}`, then copy its result here "
        f"with `{rec.get('command', RECORD_SCRIPT + ' --only ' + DISTILL_RECORDING)}` "
        f"(last copied {rec.get('recorded_at', '?')}).",
    ]
    workbench = {"page": "distill", "variant": v.id, "state": {
        "distill-teacher": v.id, "distill-student-source": "model", "distill-student-model": rec["student"],
        "distill-temperature": min(20.0, max(1.0, round(temperature * 2) / 2)), "distill-alpha": float(s["alpha"])}}
    return ExperimentResult(figures=figures, metrics=metrics, table=table, notes=notes, recorded=True,
                            workbench=workbench)


# ---------------------------------------------------------------- lesson 6: recovery

RECOVERY_AMOUNTS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))     # 0.5 ... 0.95, the lesson's slider
RECOVERY_EPOCHS = 3
RECOVERY_SUBSET = 10_000     # training images per recorded epoch
RECOVERY_LR = 0.01
LIVE_SUBSET = 2_000          # training images of the live epoch: about a second on a 2-core CPU
RECOVERY_RECORDING = "recovery.json"


def recovery_prune_config(amount: float) -> PruneConfig:
    """L1 magnitude, one global ranking, the classifier left alone: the Prune page's defaults."""
    return PruneConfig(method="l1", amount=amount, scope="global")


def recovery_train_config(epochs: int, seed: int = 0) -> TrainConfig:
    """The Prune page's prune-and-recover fine-tuning (SGD, cosine decay), on the CPU."""
    return TrainConfig(epochs=epochs, lr=RECOVERY_LR, optimizer="sgd", schedule="cosine", seed=seed, device="cpu")


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
    model, report = prune(load_cached(root, variant_id, created_at), recovery_prune_config(amount))
    names = [layer.name for layer in report.layers if layer.target is not None]
    return model, names, accuracy(model, val_subset(dataset))


@functools.lru_cache(maxsize=4)
def dense_val_accuracy(root: str, variant_id: str, created_at: float, dataset: str) -> float:
    return accuracy(load_cached(root, variant_id, created_at), val_subset(dataset))


def finetune_epochs(pruned: nn.Module, names: list[str], data, epochs: int, *, masks: bool,
                    on_epoch=lambda epoch, model, val_accuracy: None) -> tuple[nn.Module, float]:
    """Fine-tune a private copy of `pruned`, the pruned weights held at zero by masks (or not);
    `on_epoch(epoch, model, val_accuracy)` after each epoch (accuracy on `data.val`, masks still on).
    Returns (the copy with its masks made permanent, its accuracy on `data.val`)."""
    model = copy.deepcopy(pruned)
    if masks:
        attach_masks_from_zeros_(model, names)
    result = train_(model, data, recovery_train_config(epochs),
                    on_event=lambda e: on_epoch(e.epoch, model, e.val_accuracy) if e.kind == "epoch_end" else None)
    return remove_masks_(model).cpu().eval(), result.val_accuracy


def record_recovery(ws: Workspace) -> dict:
    """Per amount of the lesson's slider: accuracy (the 1,000-image validation subset; the full test
    split right after pruning and at the end) and sparsity right after pruning and after each of
    RECOVERY_EPOCHS fine-tuning epochs on RECOVERY_SUBSET training images, with masks and without."""
    v = baseline(ws)
    ds = cached_dataset(v.dataset)
    vs = val_subset(v.dataset)
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
    data = dataclasses.replace(ds, train=live_train_subset(v.dataset), val=val_subset(v.dataset))
    zeros = _zero_masks(pruned, names)
    t0 = time.perf_counter()
    model, acc = finetune_epochs(pruned, names, data, 1, masks=True)     # acc: on data.val, measured by the loop
    out = {"accuracy_before": acc0, "accuracy": acc, "sparsity_before": pruned_sparsity(pruned, names),
           "sparsity": pruned_sparsity(model, names), "seconds": time.perf_counter() - t0,
           "at": time.strftime("%H:%M:%S UTC", time.gmtime()),
           "zeros_kept": all(bool(torch.all(m.weight.detach()[zeros[n]] == 0))
                             for n, m in prunable_layers(model) if n in names)}
    return out


@functools.lru_cache(maxsize=4)
def live_train_subset(dataset: str) -> Split:
    """The fixed LIVE_SUBSET training images every live fine-tuning epoch uses."""
    return cached_dataset(dataset).train.subset(LIVE_SUBSET, seed=0)


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
    v = baseline(ws)
    rec, missing = recovery_recording(ws, v)
    row = _row_for(rec, amount) if rec else None
    _, _, acc0 = _pruned(str(ws.root), v.id, v.created_at, v.dataset, amount)
    live = live_epoch(ws, v, amount) if run_live else None   # only in the run whose button was pressed
    dense = dense_val_accuracy(str(ws.root), v.id, v.created_at, v.dataset)
    n_val = len(val_subset(v.dataset))
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


RECORDINGS = {DISTILL_RECORDING: record_dark_knowledge, RECOVERY_RECORDING: record_recovery}

"""Live experiment of the Learn lesson 5 (dark knowledge), and the helpers lessons 5-7 share.

`teacher_temperature`: the shipped LeNet-5's softmax at temperature T on one of a few fixed test
images, live, beside the distillation-vs-scratch result of bench/distill_bench.py (recorded).

Models, data subsets and the teacher's logits are cached per process (functools.lru_cache, keyed
by the workspace root, the variant id and its creation time); nothing cached is ever changed.
"""
from __future__ import annotations

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
import torch.nn.functional as F

from core.base import paths
from core.data.datasets import cached_dataset
from core.lessons.common import (
    BEFORE_COLOR,
    KEPT_COLOR,
    PRUNED_COLOR,
    RECORD_SCRIPT,
    cached_model,
    lesson_variant,
    number,
    recorded,
    tidy,
)
from core.lessons.registry import ExperimentResult, Metric, experiment
from core.store.workspace import Workspace
from core.viz.charts import two_line_title

REPO = paths.REPO_ROOT




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
    model = cached_model(root, variant_id, created_at)
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
    v = lesson_variant(ws)
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


RECORDINGS = {DISTILL_RECORDING: record_dark_knowledge}

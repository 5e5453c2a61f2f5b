"""Live experiments of the Learn lesson 7: the full pipeline (prune, recover, quantize, encode).

`pipeline_stages`: the Deep Compression stage table of this repo's bench (recorded:
bench/results/deep_compression.json) beside the paper's numbers for LeNet-5 (Han, Mao and Dally,
ICLR 2016), and a live run of the last two stages with the engine's own weight sharing and file
encoding: the shipped LeNet-5 pruned per layer with the bench's amounts and fine-tuned for one short
epoch (masks fixed; once per process: the bench retrains far longer), its non-zero weights clustered
with the chosen fc codebook bits, then packed and Huffman-coded. Everything live is cached per
process (functools.lru_cache), so only the first call takes a few seconds.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
from pathlib import Path

import plotly.graph_objects as go
import torch.nn as nn

from core.base import paths
from core.base.units import human_bytes
from core.compress.pruning.prune import PruneConfig, prune
from core.compress.sharing.weight_sharing import apply_shared_, shared_layers
from core.data.datasets import cached_dataset
from core.formats.encoding import encode_best
from core.formats.shared import encode_shared, file_breakdown
from core.lessons.common import (
    KEPT_COLOR,
    LIVE_COLOR,
    LIVE_SUBSET,
    cached_model,
    dense_val_accuracy,
    finetune_epochs,
    lesson_val,
    lesson_variant,
    live_train_subset,
    tidy,
)
from core.lessons.registry import ExperimentResult, Metric, experiment
from core.measure.metrics import accuracy
from core.store.variants import file_metadata
from core.store.workspace import Variant, Workspace
from core.viz.charts import two_line_title
from core.viz.sharing import bytes_by_layer_chart

REPO = paths.REPO_ROOT
BENCH = REPO / "bench" / "results" / "deep_compression.json"
BENCH_QUICK = REPO / "bench" / "results" / "deep_compression_quick.json"
# The live run prunes and shares like the recorded bench (its result names its per-layer amounts and
# conv bits), so that at the bench's fc bits it repeats the bench's stages without the long retraining.
# A result without them falls back to Han et al.'s: they kept 66%/12%/8%/19% of conv1/conv2/fc1/fc2.
PAPER_AMOUNTS = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}
QUICK_EPOCHS = 1           # the live pruned model's fine-tuning (masks fixed), once per process
STAGES = ("float32 dense", "pruned", "+ weight sharing", "+ Huffman coding")
SHORT = ("dense", "pruned", "+ sharing", "+ Huffman")      # chart labels: two charts share a projector's width

# Han, Mao and Dally, "Deep Compression", ICLR 2016 (Tables 1 and 3), LeNet-5 on MNIST: only the
# numbers the paper states. It gives no byte count for the pruned-only stage (only 8% of weights kept).
PAPER = {"dense_bytes": 1_720_000, "final_bytes": 44_000, "ratio": 39, "weights_kept": 0.08,
         "error_before": 0.0080, "error_after": 0.0074, "bits_conv": 8, "bits_fc": 5,
         "kept_per_layer": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19}}
PAPER_COLOR = "#8e44ad"


# ---------------------------------------------------------------- the recorded bench

def bench_result() -> tuple[dict, Path]:
    """The Deep Compression bench's result (the full run, else the labelled --quick one)."""
    for path in (BENCH, BENCH_QUICK):
        if path.is_file():
            try:
                return json.loads(path.read_text()), path
            except json.JSONDecodeError as e:
                raise ValueError(f"{path.relative_to(REPO)} is not valid JSON ({e}): rerun "
                                 "`.venv/bin/python bench/deep_compression.py`") from None
    raise ValueError(f"{BENCH.relative_to(REPO)} is missing: run `.venv/bin/python bench/deep_compression.py` "
                     "(about 2 minutes on an idle 2-core CPU)")


def bench_command(b: dict) -> str:
    """The command line that reruns the bench with the settings it recorded."""
    if b.get("command"):
        return b["command"]
    quick = bool(b.get("quick"))
    defaults = {"steps": 2, "finetune_epochs": 1, "subset": 3000} if quick else \
        {"steps": 3, "finetune_epochs": 2, "subset": None}
    cmd = ".venv/bin/python bench/deep_compression.py" + (" --quick" if quick else "")
    for key, flag in (("subset", "--subset"), ("steps", "--steps"), ("finetune_epochs", "--epochs")):
        if b.get(key) != defaults[key] and b.get(key) is not None:
            cmd += f" {flag} {b[key]}"
    return cmd


# ---------------------------------------------------------------- live: the last two stages

def live_key(ws: Workspace, v: Variant, bench: dict) -> tuple[tuple, int]:
    """((workspace root, variant id, created_at, dataset, per-layer amounts), conv bits) of the live
    run: the recorded bench's amounts and conv codebook bits."""
    amounts = bench.get("layer_amounts") or PAPER_AMOUNTS
    bits_conv = int(bench.get("bits_conv") or PAPER["bits_conv"])
    return (str(ws.root), v.id, v.created_at, v.dataset, tuple((str(n), float(a)) for n, a in amounts.items())), bits_conv


@functools.lru_cache(maxsize=4)
def _pruned(root: str, variant_id: str, created_at: float, dataset: str,
            amounts: tuple[tuple[str, float], ...]) -> tuple[nn.Module, int, float, float, dict]:
    """(the baseline pruned per layer with `amounts` and fine-tuned QUICK_EPOCHS epoch on the
    lessons' small live training subset, masks fixed; its file's bytes in its best honest encoding;
    its val-subset accuracy; that accuracy right after pruning; the file metadata). Built once per
    process (a few seconds). Read-only."""
    base = cached_model(root, variant_id, created_at)
    model, _ = prune(base, PruneConfig(amount=0.9, scope="layer", layer_amounts=dict(amounts), exclude=()))
    # untouched after pruning (fc1 at 96%) it keeps about 44% accuracy, which hides what sharing
    # does; one short epoch brings it to the mid 80s (the bench retrains 6 epochs on every image)
    ds = cached_dataset(dataset)
    data = dataclasses.replace(ds, train=live_train_subset(dataset), val=lesson_val(dataset))
    untuned = accuracy(model, data.val)
    model, tuned = finetune_epochs(model, [n for n, _ in amounts], data, QUICK_EPOCHS, masks=True)
    v = Workspace(root, seed_baselines=False).get_variant(variant_id)
    meta = file_metadata(f"{v.name} | pruned per layer (lesson)", dataset, v.arch)
    file_bytes, _ = encode_best(model.state_dict(), meta)
    return model, len(file_bytes), tuned, untuned, meta


@functools.lru_cache(maxsize=16)
def _shared(root: str, variant_id: str, created_at: float, dataset: str, amounts: tuple, bits_conv: int,
            bits_fc: int) -> dict:
    """The pruned model weight-shared (k-means, `bits_conv` / `bits_fc` codebooks, no centroid
    fine-tuning), encoded packed and Huffman-coded: bytes, breakdown and val-subset accuracy."""
    pruned, _, _, _, meta = _pruned(root, variant_id, created_at, dataset, amounts)
    model = copy.deepcopy(pruned)
    layers = shared_layers(model, bits_conv, bits_fc)
    apply_shared_(layers)
    shared = {s.name: {"codebook": s.codebook, "codes": s.codes, "bits": s.bits} for s in layers}
    state = model.state_dict()
    packed = encode_shared(state, shared, meta, coding="packed")
    huffman = encode_shared(state, shared, meta, coding="huffman")
    return {"packed_bytes": len(packed), "huffman_bytes": len(huffman), "breakdown": file_breakdown(huffman),
            "file": huffman,     # the Huffman-coded file itself (a few tens of kB): it decodes with core.compress.quant.files
            "accuracy": accuracy(model, lesson_val(dataset)),
            "values_per_layer": {s.name.rsplit(".", 1)[0]: int(s.codes.unique().numel()) for s in layers}}


def share_variant(ws: Workspace, v: Variant) -> Variant:
    """The variant the Quantize page's weight-sharing form should open on: the newest pruned and
    retrained (prune_recover) float descendant of `v`, else `v` itself (the page then says to prune first)."""
    best = None
    for c in ws.descendants(v.id):
        pruned = any(s.get("step") == "prune_recover" for s in c.recipe)
        plain = c.format == "sparse" and c.is_float
        if pruned and plain and (best is None or c.created_at > best.created_at):
            best = c
    return best or v


# ---------------------------------------------------------------- figures

def _bytes_chart(bench: dict, live: list[int], bits_conv: int, bits_fc: int) -> go.Figure:
    fig = go.Figure()
    fig.add_scatter(x=list(SHORT), y=[s["bytes"] for s in bench["stages"]], mode="lines+markers",
                    name="bench (recorded)", line={"color": KEPT_COLOR, "width": 3},
                    hovertemplate="%{x}: %{y:,} bytes<extra>bench, recorded</extra>")
    fig.add_scatter(x=list(SHORT), y=live, mode="lines+markers", name=f"live, {bits_conv}/{bits_fc}-bit",
                    line={"color": LIVE_COLOR, "dash": "dash"}, marker={"symbol": "star", "size": 12},
                    hovertemplate="%{x}: %{y:,} bytes<extra>live</extra>")
    fig.add_scatter(x=[SHORT[0], SHORT[-1]], y=[PAPER["dense_bytes"], PAPER["final_bytes"]], mode="markers",
                    name="paper (MNIST)", marker={"color": PAPER_COLOR, "size": 13, "symbol": "diamond"},
                    hovertemplate="%{x}: %{y:,} bytes<extra>Han et al. 2016</extra>")
    ticks = [10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000]
    fig.update_layout(yaxis={"title": "file bytes (log scale)", "type": "log", "tickvals": ticks,
                             "ticktext": [human_bytes(t) for t in ticks], "range": [4, 6.5]},
                      title=two_line_title("Bytes after each stage",
                                              "log scale: equal steps down are equal factors smaller"))
    return tidy(fig, 420)


def _accuracy_chart(bench: dict, live_acc: list[float], live_n: int) -> go.Figure:
    """Lines, not bars: the accuracy axis does not start at 0."""
    fig = go.Figure()
    fig.add_scatter(x=list(SHORT), y=[s["accuracy"] for s in bench["stages"]], mode="lines+markers+text",
                    name="bench, test split (recorded)", line={"color": KEPT_COLOR, "width": 3},
                    text=[f"{s['accuracy']:.1%}" for s in bench["stages"]], textposition="top center",
                    hovertemplate="%{x}: %{y:.2%}<extra>bench</extra>")
    fig.add_scatter(x=list(SHORT), y=live_acc, mode="lines+markers+text",
                    name=f"live, {live_n:,} val. images", line={"color": LIVE_COLOR, "dash": "dash"},
                    marker={"symbol": "star", "size": 12}, text=[f"{a:.1%}" for a in live_acc],
                    textposition="bottom center", hovertemplate="%{x}: %{y:.2%}<extra>live</extra>")
    accs = [s["accuracy"] for s in bench["stages"]] + live_acc
    fig.update_layout(yaxis={"title": "accuracy", "tickformat": ".0%",
                             "range": [max(0.0, min(accs) - 0.04), min(1.0, max(accs) + 0.03)]},
                      title=two_line_title("Accuracy after each stage",
                                              "retraining wins back what pruning costs; Huffman coding is lossless"))
    return tidy(fig)


# ---------------------------------------------------------------- the experiment

@experiment("pipeline_stages")
def pipeline_stages(ws: Workspace, params: dict) -> ExperimentResult:
    """The Deep Compression stage table (recorded bench, the paper) and live weight sharing at `fc_bits`."""
    bits = params.get("fc_bits", 5)
    if isinstance(bits, bool) or not isinstance(bits, (int, float)) or bits != int(bits) or not 2 <= bits <= 8:
        raise ValueError(f"fc_bits must be a whole number from 2 to 8, got {bits!r}")
    bits = int(bits)
    v = lesson_variant(ws)
    bench, bench_path = bench_result()
    if len(bench.get("stages", [])) != len(STAGES):
        raise ValueError(f"{bench_path.relative_to(REPO)} has {len(bench.get('stages', []))} stages, not "
                         f"{len(STAGES)}: rerun `.venv/bin/python bench/deep_compression.py`")
    key, conv = live_key(ws, v, bench)
    _, pruned_bytes, pruned_acc, untuned_acc, _ = _pruned(*key)
    sh = _shared(*key, conv, bits)
    dense_bytes = v.metrics.get("dense_size_bytes") or bench["stages"][0]["bytes"]
    dense_acc = dense_val_accuracy(*key[:4])
    live_bytes = [dense_bytes, pruned_bytes, sh["packed_bytes"], sh["huffman_bytes"]]
    live_acc = [dense_acc, pruned_acc, sh["accuracy"], sh["accuracy"]]
    n_val = len(lesson_val(v.dataset))
    final = bench["stages"][-1]
    quick = " (a reduced --quick run)" if bench.get("quick") else ""

    paper_col = [f"{PAPER['dense_bytes'] // 1000:,} KB; {PAPER['error_before']:.2%} error",
                 f"{PAPER['weights_kept']:.0%} of weights kept ({1 / PAPER['weights_kept']:.0f}x)",
                 f"{PAPER['bits_conv']}-bit conv / {PAPER['bits_fc']}-bit fc",
                 f"{PAPER['final_bytes'] // 1000} KB ({PAPER['ratio']}x); {PAPER['error_after']:.2%} error"]
    table = []
    for i, (stage, s) in enumerate(zip(STAGES, bench["stages"])):
        table.append({"stage": stage, "bench bytes": f"{s['bytes']:,} ({s['ratio']:.1f}x)",
                      "bench test acc.": f"{s['accuracy']:.2%} ({s['change_points']:+.2f} pt)",
                      "live bytes": f"{live_bytes[i]:,} ({dense_bytes / live_bytes[i]:.1f}x)",
                      "live val. acc.": f"{live_acc[i]:.2%}", "paper (LeNet-5, MNIST)": paper_col[i]})
    metrics = [
        Metric(f"Live: weight-shared ({conv}/{bits}-bit)", human_bytes(sh["packed_bytes"]),
               f"{dense_bytes / sh['packed_bytes']:.1f}x smaller than dense",
               help="Codebooks + bit-packed codes + relative indices, the engine's weight-sharing file format."),
        Metric("Live: + Huffman coding", human_bytes(sh["huffman_bytes"]),
               f"{dense_bytes / sh['huffman_bytes']:.1f}x smaller than dense",
               help="The same codes and indices, canonical-Huffman coded where that is smaller: the same weights."),
        Metric("Live accuracy after sharing", f"{sh['accuracy']:.2%}",
               f"{100 * (sh['accuracy'] - pruned_acc):+.2f} pt vs pruned only",
               help=f"On the fixed {n_val:,}-image validation subset. The pruned model had only one short "
                    f"fine-tuning epoch, so it is already {100 * (dense_acc - pruned_acc):.1f} points below the "
                    "unpruned one before sharing starts."),
        Metric(f"Bench, all stages (recorded){quick}", f"{final['ratio']:.1f}x", f"{final['change_points']:+.2f} pt",
               help="Pruned and retrained, weight-shared with centroid fine-tuning, Huffman-coded; test accuracy "
                    "change on the full test split."),
        Metric("Paper: LeNet-5 on MNIST", f"{PAPER['ratio']}x",
               f"top-1 error {PAPER['error_before']:.2%} → {PAPER['error_after']:.2%}",
               help="Han, Mao and Dally's result, for comparison: on MNIST digits, an easier dataset."),
    ]
    amounts = ", ".join(f"{n} {a:.0%}" for n, a in key[4])
    bench_bits = f"{bench.get('bits_conv', PAPER['bits_conv'])}/{bench.get('bits_fc', PAPER['bits_fc'])}-bit"
    notes = [
        f"**Recorded** (the bench columns, the solid line): `bench/deep_compression.py`{quick} on {bench['date']}, "
        f"device {bench['device']}, {bench['seconds']:.0f} s, load average {bench['loadavg_start'][0]:.2f} at the "
        f"start: prune-and-recover ({amounts} pruned; {bench['steps']} AGP steps x {bench['finetune_epochs']} "
        f"epochs), weight sharing {bench_bits} with {bench['share_epochs']} centroid fine-tuning epochs, Huffman coding; "
        f"test accuracy on the full test split. Rerun with `{bench_command(bench)}`.",
        f"**Live** (the dashed line): {v.name} pruned by magnitude per layer ({amounts}) and fine-tuned for only "
        f"{QUICK_EPOCHS} epoch on {LIVE_SUBSET:,} training images with the masks fixed (once per server process, "
        f"a few seconds; right after pruning it was at {untuned_acc:.1%}); then the engine's k-means "
        f"weight sharing ({conv}-bit conv, {bits}-bit fc codebooks, no centroid fine-tuning) and its file "
        f"encodings, on this machine. Accuracy on the fixed {n_val:,}-image validation subset. The bytes are real "
        "file sizes; the accuracy is below the bench's because the bench retrains far longer.",
        "**Paper**: Han, Mao and Dally, *Deep Compression*, ICLR 2016, Tables 1 and 3: LeNet-5 on MNIST (digits, an "
        "easier dataset than Fashion-MNIST), 1,720 KB → 44 KB (39x) at 0.80% → 0.74% top-1 error, 8% of the weights "
        "kept (" + ", ".join(f"{n} {k:.0%}" for n, k in PAPER["kept_per_layer"].items()) + "), 8-bit conv and 5-bit "
        "fc codebooks. The paper gives no file size for the pruned-only stage.",
    ]
    target = share_variant(ws, v)
    workbench = {"page": "quantize", "variant": target.id, "state": {
        "share-bits-conv": conv, "share-bits-fc": bits, "share-epochs": 1, "share-subset": 10_000}}
    if target.id == v.id:
        notes.append(f"**Try it in the workbench** opens the Quantize page on {v.name}, which is dense: prune it "
                     "first (Prune page, Prune and recover) to share a pruned model, as the bench did.")
    where = bytes_by_layer_chart(sh["breakdown"], title=f"Live: where the {sh['huffman_bytes']:,} bytes of the "
                                                      f"Huffman-coded file went ({conv}/{bits}-bit)")
    # its legend goes below the bars: above them it runs into the title in presenter mode's larger type
    where.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0},
                        height=where.layout.height + 90, margin={"t": 50, "b": 10})
    figures = [_bytes_chart(bench, live_bytes, conv, bits), _accuracy_chart(bench, live_acc, n_val), where]
    return ExperimentResult(figures=figures, metrics=metrics, table=table, notes=notes, recorded=True,
                            workbench=workbench)

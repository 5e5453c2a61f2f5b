"""Comparing variants: the Pareto front of accuracy against a cost (bytes, milliseconds), and the
table of every variant with its fixed metrics, its ratios to its root and its kind flags. Data in,
plain rows out (the Compare page, its CSV and the figures in core.viz.compare read these).

A ratio to the root is shown only when core.base.ratios allows it: sizes always (bytes do not depend on
the device), latencies only when both were timed together (a child with its parent) or in separate runs on
the same device. Latency columns belong to one runtime (`core.base.ratios.RUNTIMES`: PyTorch eager or ONNX
Runtime), chosen by the caller: its figures, their 95% intervals, its device, and why a figure is missing
("not measurable now: ...", or no ONNX Runtime figure at all)."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from core.base.kinds import KIND_FLAGS, kind_label
from core.base.ratios import RUNTIMES, busy_warning, latency_ratio, size_ratio

METRICS = ("accuracy", "params", "nonzero_params", "size_bytes", "dense_size_bytes", "latency_ms_b1",
           "latency_ms_b64", "macs", "device")
COSTS = {"size_bytes": "Download size", "latency_ms_b1": "Latency, batch 1", "latency_ms_b64": "Latency, batch 64"}
BATCHES = (1, 64)


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: none has a cost at most as high AND an accuracy
    at least as high, with one of the two strictly better. `points` are (cost, accuracy); the
    result is ordered by cost (then by accuracy, best first). Equal points are all kept."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        cost, acc = points[i]
        if acc > best:
            front.append(i)
            best = acc
        elif acc == best and front and points[front[-1]] == (cost, acc):
            front.append(i)   # an exact tie with the last front point is not beaten either
    return front


def method_of(variant) -> str:
    """What the last step of a variant's recipe did, as a short legend label."""
    step = variant.recipe[-1] if variant.recipe and isinstance(variant.recipe[-1], dict) else {}
    name = step.get("step", "")
    if name == "train":
        return "trained"
    if name == "upload":
        return "uploaded"
    if name == "prune":
        return f"prune: {'channels' if step.get('method') == 'channel' else step.get('method', '?')}"
    if name == "prune_recover":
        method = (step.get("prune") or {}).get("method", "?")
        return f"prune + recover: {'channels' if method == 'channel' else method}"
    if name == "quantize":
        mode = step.get("mode", "?")
        return f"quantize: {mode}" + (f" {step.get('bits')}-bit" if mode == "weight-only" else "")
    if name == "finetune":
        return "fine-tune"
    if name == "distill":
        return "scratch (distill ablation)" if step.get("ablation") else "distill"
    if name == "transfer":
        return "transfer"
    return name or "unknown"


def roots(variants: Sequence) -> dict[str, object]:
    """id -> the root of each variant's lineage among `variants` (itself when it has no parent here)."""
    by_id = {v.id: v for v in variants}
    out = {}
    for v in variants:
        seen, r = {v.id}, v
        while r.parent_id and r.parent_id in by_id and r.parent_id not in seen:
            r = by_id[r.parent_id]
            seen.add(r.id)
        out[v.id] = r
    return out


def depths(variants: Sequence) -> dict[str, int]:
    by_id = {v.id: v for v in variants}
    out = {}
    for v in variants:
        d, r, seen = 0, v, {v.id}
        while r.parent_id and r.parent_id in by_id and r.parent_id not in seen:
            r = by_id[r.parent_id]
            seen.add(r.id)
            d += 1
        out[v.id] = d
    return out


def _interval(metrics: dict, key: str) -> tuple[float, float] | None:
    ci = metrics.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_finite(x) is not None for x in ci):
        return float(ci[0]), float(ci[1])
    return None


def latency_missing(metrics: dict, runtime: str = "torch", batch: int = 1) -> str:
    """Why a variant has no `runtime` latency at `batch` ('' when it has one): no figure in that
    runtime at all (`<prefix>unavailable`), a figure that did not settle ('not measurable now: ...'),
    or never measured."""
    rt = RUNTIMES[runtime]
    key = f"{rt.prefix}latency_ms_b{batch}"
    if _finite(metrics.get(key)) is not None:
        return ""
    if rt.prefix and metrics.get(f"{rt.prefix}unavailable"):
        return f"no {rt.title} figure: {metrics[f'{rt.prefix}unavailable']}"
    if metrics.get(f"{rt.prefix}latency_unmeasured"):
        return str(metrics[f"{rt.prefix}latency_unmeasured"])
    if key in metrics and metrics[key] is not None:   # NaN without a reason stored
        return "not measurable now: the timings did not settle"
    return f"not measured in {rt.title}"


def _ratio_cells(row: dict, name: str, ratio) -> None:
    """`<name>` (the ratio, None when not shown), `<name>_low`/`_high` (its 95% interval)."""
    row[name] = round(ratio.value, 4) if ratio is not None and ratio.shown else None
    shown = ratio is not None and ratio.shown and ratio.low is not None
    row[f"{name}_low"] = round(ratio.low, 4) if shown else None
    row[f"{name}_high"] = round(ratio.high, 4) if shown else None


def compare_rows(variants: Sequence, runtime: str = "torch") -> list[dict]:
    """One row per variant (in tree order: each root followed by its descendants, depth first):
    the fixed metrics, ratios to its root and its parent where allowed, the kind flags, what made it.
    The latency cells (`latency_ms_b1`, ...) are those of `runtime` (a key of RUNTIMES), with their
    95% intervals (`latency_ms_b1_low`/`_high`), the device they were timed on (`device`) and, when a
    figure is missing, why (`latency_missing_b1`)."""
    rt = RUNTIMES[runtime]
    by_root = roots(variants)
    by_id = {v.id: v for v in variants}
    depth = depths(variants)
    rows = []
    for v in tree_order(variants):
        m, root = v.metrics, by_root[v.id]
        r = root.metrics if root.id != v.id else None
        parent = by_id.get(v.parent_id) if v.parent_id else None
        row = {"id": v.id, "name": v.name, "parent_id": v.parent_id or "", "root_id": root.id, "depth": depth[v.id],
               "dataset": v.dataset, "method": method_of(v), "kind": kind_label(v.kind), "runtime": rt.key,
               **{k: bool(v.kind.get(k)) for k in KIND_FLAGS}}
        for k in METRICS:
            if k == "device":
                row[k] = m.get(rt.device_key)
            elif k.startswith("latency_ms_"):
                row[k] = _finite(m.get(rt.prefix + k))
            else:
                row[k] = _finite(m.get(k))
        row["accuracy_vs_root_pp"] = (round((row["accuracy"] - r["accuracy"]) * 100, 4)
                                      if r and row["accuracy"] is not None and _finite(r.get("accuracy")) is not None
                                      else None)
        sr = size_ratio(m, r) if r else None
        row["smaller_than_root"] = round(sr.value, 4) if sr and sr.shown else None
        for b in BATCHES:
            key = f"latency_ms_b{b}"
            ci = _interval(m, f"{rt.prefix}{key}_ci") if row[key] is not None else None
            row[f"{key}_low"], row[f"{key}_high"] = ci or (None, None)
            row[f"latency_missing_b{b}"] = latency_missing(m, runtime, b)
            # a child of the root was timed together with it: that pairing is used first
            paired = "reference" if r is not None and parent is root else None
            lr = latency_ratio(m, r, batch=b, paired=paired, runtime=runtime) if r else None
            _ratio_cells(row, f"faster_than_root_b{b}", lr)
            row[f"latency_vs_root_b{b}"] = lr.basis if lr else "this is the root"
            pr = latency_ratio(m, parent.metrics, batch=b, paired="reference", runtime=runtime) if parent else None
            _ratio_cells(row, f"faster_than_parent_b{b}", pr)
            row[f"latency_vs_parent_b{b}"] = pr.basis if pr else "no parent"
        row["runtime_unavailable"] = (m.get(f"{rt.prefix}unavailable") or "") if rt.prefix else ""
        row["latency_busy"] = bool(busy_warning(m))
        rows.append(row)
    return rows


def tree_order(variants: Sequence) -> list:
    """Variants ordered as a tree: each root (oldest first), then its children depth first."""
    ids = {v.id for v in variants}
    kids: dict[str | None, list] = {}
    for v in sorted(variants, key=lambda v: v.created_at):
        parent = v.parent_id if v.parent_id in ids else None
        kids.setdefault(parent, []).append(v)
    out, seen = [], set()

    def walk(v) -> None:
        if v.id in seen:
            return
        seen.add(v.id)
        out.append(v)
        for k in kids.get(v.id, []):
            walk(k)
    for r in kids.get(None, []):
        walk(r)
    out += [v for v in variants if v.id not in seen]   # a cycle in a damaged index: still listed
    return out


def front_ids(rows: Sequence[dict], cost: str) -> list[str]:
    """Ids of the rows on the accuracy-vs-`cost` front (rows without both numbers are left out)."""
    usable = [r for r in rows if r.get(cost) is not None and r.get("accuracy") is not None]
    return [usable[i]["id"] for i in pareto_front([(r[cost], r["accuracy"]) for r in usable])]


CSV_COLUMNS = ("id", "name", "parent_id", "root_id", "dataset", "method", "kind", *KIND_FLAGS, *METRICS, "runtime",
               *(f"latency_ms_b{b}_{end}" for b in BATCHES for end in ("low", "high")),
               *(f"latency_missing_b{b}" for b in BATCHES), "accuracy_vs_root_pp", "smaller_than_root",
               *(f"faster_than_{who}_b{b}{end}" for who in ("root", "parent") for b in BATCHES
                 for end in ("", "_low", "_high")),
               *(f"latency_vs_{who}_b{b}" for who in ("root", "parent") for b in BATCHES), "runtime_unavailable",
               "latency_busy")


def rows_csv(rows: Sequence[dict]) -> bytes:
    """The rows as CSV (UTF-8, header first); empty cells where a number was not measured. The
    latency columns are those of the rows' `runtime` (its column says which)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue().encode("utf-8")

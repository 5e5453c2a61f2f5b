"""Comparing variants: the Pareto front of accuracy against a cost (bytes, milliseconds), and the
table of every variant with its fixed metrics, its ratios to its root and its kind flags. Data in,
plain rows out (the Compare page, its CSV and the figures in core.viz.compare read these).

A ratio to the root is shown only when core.base.ratios allows it: sizes always (bytes do not depend on
the device), latencies only when both were timed on the same device."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from core.base.kinds import KIND_FLAGS, kind_label
from core.base.ratios import busy_warning, latency_ratio, size_ratio

METRICS = ("accuracy", "params", "nonzero_params", "size_bytes", "dense_size_bytes", "latency_ms_b1",
           "latency_ms_b64", "macs", "device")
COSTS = {"size_bytes": "Download size", "latency_ms_b1": "Latency, batch 1", "latency_ms_b64": "Latency, batch 64"}


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


def compare_rows(variants: Sequence) -> list[dict]:
    """One row per variant (in tree order: each root followed by its descendants, depth first):
    the fixed metrics, ratios to its root where allowed, the kind flags, what made it."""
    by_root = roots(variants)
    depth = depths(variants)
    rows = []
    for v in tree_order(variants):
        m, root = v.metrics, by_root[v.id]
        r = root.metrics if root.id != v.id else None
        row = {"id": v.id, "name": v.name, "parent_id": v.parent_id or "", "root_id": root.id, "depth": depth[v.id],
               "dataset": v.dataset, "method": method_of(v), "kind": kind_label(v.kind),
               **{k: bool(v.kind.get(k)) for k in KIND_FLAGS}}
        for k in METRICS:
            row[k] = m.get(k) if k == "device" else _finite(m.get(k))
        row["accuracy_vs_root_pp"] = (round((row["accuracy"] - r["accuracy"]) * 100, 4)
                                      if r and row["accuracy"] is not None and _finite(r.get("accuracy")) is not None
                                      else None)
        sr = size_ratio(m, r) if r else None
        row["smaller_than_root"] = round(sr.value, 4) if sr and sr.shown else None
        for b in (1, 64):
            lr = latency_ratio(m, r, batch=b) if r else None
            row[f"faster_than_root_b{b}"] = round(lr.value, 4) if lr and lr.shown else None
            row[f"latency_vs_root_b{b}"] = lr.basis if lr else "this is the root"
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


CSV_COLUMNS = ("id", "name", "parent_id", "root_id", "dataset", "method", "kind", *KIND_FLAGS, *METRICS,
               "accuracy_vs_root_pp", "smaller_than_root", "faster_than_root_b1", "faster_than_root_b64",
               "latency_vs_root_b1", "latency_vs_root_b64", "latency_busy")


def rows_csv(rows: Sequence[dict]) -> bytes:
    """The rows as CSV (UTF-8, header first); empty cells where a number was not measured."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue().encode("utf-8")

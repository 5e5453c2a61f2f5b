"""The model card of a variant: one JSON-safe dict that says what the model is, how it was made,
what was measured (and where), and how to feed it an image. Exported beside every download
(`core.io.export.pipeline`) and served at `GET /model` (`core.io.serve.rest`).
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
from importlib import metadata as _metadata

from core.base.kinds import KIND_FLAGS, kind_label
from core.base.ratios import RUNTIMES, latency_ratio, runtime_verdict, speed_words
from core.data.datasets import get_info
from core.data.preprocess import OBJECT_FRAMES

CARD_VERSION = 1
LATENCY_BATCHES = (1, 64)
NOT_MEASURABLE = "not measurable now"


def json_safe(x):
    """Plain JSON values only: non-finite floats become None, tuples lists, anything else str."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return str(x)


def library_versions() -> dict[str, str | None]:
    """Versions of what loads the files (None: not installed here)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "safetensors", "numpy", "onnx", "onnxruntime", "openvino"):
        try:
            out[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _geometry_steps(info) -> list[str]:
    """How an image is framed for `info`'s models: the dataset's own construction (core.data.preprocess)."""
    c, s = info.in_channels, info.image_size
    frame = None if info.uploaded else OBJECT_FRAMES.get(info.name)
    if c == 1 and frame is not None and frame.frame == s:
        centre = "its bounding box centred" if frame.centre == "box" else "its centre of mass centred"
        return ["decode the image (EXIF orientation applied) and convert it to greyscale",
                "if its border is light, invert it: the dataset shows a light object on a black background",
                "subtract the background level (a plane fitted to the border pixels) and crop to the object's "
                "bounding box",
                "stretch the contrast so the object's brightest part is white",
                f"scale it so its longest side is {frame.object_size} pixels (aspect ratio kept) and place it, "
                f"{centre}, in a black {s}x{s} frame"]
    if c == 1:
        return ["decode the image and convert it to greyscale (PIL mode L)", f"resize it to {s}x{s} pixels",
                "if its border is light (mean above 127 of 255), invert it: the training images show a light object "
                "on a dark background"]
    if info.uploaded:
        return ["decode the image and convert it to RGB", f"resize it to {s}x{s} pixels"]
    return ["decode the image and convert it to RGB",
            f"scale it so its shorter side is {s} pixels and crop the centre {s}x{s}"]


def preprocessing(info) -> dict:
    """How an image becomes the model's input tensor, for `info` (a core.data.types.DatasetInfo)."""
    c, s = info.in_channels, info.image_size
    steps = [*_geometry_steps(info),
             "scale the uint8 pixels to [0, 1] (divide by 255)",
             f"normalise each channel: (x - mean) / std with mean={list(info.mean)}, std={list(info.std)}",
             f"feed a float32 tensor of shape (N, {c}, {s}, {s}); the output is (N, {info.num_classes}) logits, "
             "softmax gives probabilities in the order of class_names"]
    return {"input_shape": [c, s, s], "input_dtype": "float32", "layout": "NCHW", "pixel_scale": 1 / 255,
            "mean": list(info.mean), "std": list(info.std), "steps": steps,
            "description": "; ".join(steps) + ".",
            "reference": "core.data.images.preprocess_image(image_bytes, info) in this repository (the Predict page "
                         "and the REST/gRPC services use it)"}


def dataset_card(name: str, workspace_root=None) -> dict:
    """The dataset part of a card; a dataset that is no longer known keeps just its name."""
    try:
        info = get_info(name, workspace_root)
    except (ValueError, OSError) as e:
        return {"name": name, "title": name, "class_names": None, "note": f"dataset details unavailable: {e}"}
    pre = preprocessing(info)
    return {"name": info.name, "title": info.title, "class_names": list(info.class_names),
            "num_classes": info.num_classes, "in_channels": info.in_channels, "image_size": info.image_size,
            "mean": list(info.mean), "std": list(info.std), "uploaded": bool(info.uploaded),
            "description": info.description, "preprocessing": pre["description"], "preprocessing_detail": pre}


def _finite(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _pair(x) -> list[float] | None:
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(_finite(v) is not None for v in x):
        return [float(x[0]), float(x[1])]
    return None


def fmt_ms(x: float) -> str:
    """'12.34 ms', '0.123 ms'."""
    return f"{x:.2f} ms" if x >= 1 else f"{x:.3f} ms"


def ratio_words(r: float) -> str:
    """'1.60x faster than its parent', 'the same speed as its parent' (see `speed_words`)."""
    words = speed_words(r)
    return "the same speed as its parent" if words == "same speed" else f"{words} than its parent"


def unmeasured_reason(metrics: dict, runtime: str) -> str:
    """Why `runtime`'s figures were withheld, without the leading 'not measurable now: '."""
    why = str(metrics.get(f"{RUNTIMES[runtime].prefix}latency_unmeasured") or "")
    why = why.removeprefix(NOT_MEASURABLE).lstrip(": ").strip()
    return why or "the timings did not settle within +/-10%"


def latency_figure(metrics: dict, runtime: str, batch: int) -> dict:
    """One latency figure of a variant, as it may be shown: `status` 'measured' (median with its
    95% interval; `ci_ms` is None only for an older figure stored before intervals were kept),
    'not measurable' (timed but not settled: NaN, with the stored `reason`), 'unavailable' (this
    runtime cannot run the variant) or 'not measured'. `vs_parent` is the parent's time over this
    one's, timed together in one call, with its interval; `text` says it all in one line."""
    rt = RUNTIMES[runtime]
    key = f"{rt.prefix}latency_ms_b{batch}"
    value = metrics.get(key)
    fig: dict = {"median_ms": None, "ci_ms": None, "vs_parent": None, "vs_parent_ci": None, "reason": ""}
    unavailable = metrics.get(f"{rt.prefix}unavailable") if rt.prefix else ""
    if unavailable:
        fig |= {"status": "unavailable", "reason": str(unavailable), "text": f"no {rt.title} figure: {unavailable}"}
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value) is None:
        why = unmeasured_reason(metrics, runtime)
        fig |= {"status": "not measurable", "reason": why, "text": f"{NOT_MEASURABLE}: {why}"}
    elif _finite(value) is None:
        fig |= {"status": "not measured", "text": f"not measured in {rt.title}"}
    else:
        ci = _pair(metrics.get(f"{key}_ci"))
        fig |= {"status": "measured", "median_ms": float(value), "ci_ms": ci,
                "text": f"{fmt_ms(value)} " + (f"(95% interval {fmt_ms(ci[0])[:-3]}-{fmt_ms(ci[1])})" if ci
                                               else "(no interval: measured before intervals were kept)")}
        r = latency_ratio(metrics, {}, batch=batch, paired="reference", runtime=runtime)
        if r.shown and str(r.basis).startswith("timed together"):
            ratio_ci = [r.low, r.high] if r.low is not None and r.high is not None else None
            fig |= {"vs_parent": r.value, "vs_parent_ci": ratio_ci}
            fig["text"] += f", {ratio_words(r.value)}" + (f" ({r.interval_words()})" if ratio_ci else "")
    return fig


def latency_card(metrics: dict, *, masked: bool = False, runtimes=tuple(RUNTIMES)) -> dict:
    """The measured latencies of a variant in each of `runtimes`: the device and (ONNX Runtime)
    the model that ran, each batch's figure (`latency_figure`), and the verdict naming the runtime."""
    out: dict = {}
    for key in runtimes:
        rt = RUNTIMES[key]
        entry = {"runtime": rt.title, "device": metrics.get(rt.device_key)}
        if rt.prefix:   # a graph runtime: what ran, or why nothing did
            entry["model"] = metrics.get(f"{rt.prefix}model")
            entry["unavailable"] = metrics.get(f"{rt.prefix}unavailable") or ""
        entry["batches"] = {str(b): latency_figure(metrics, key, b) for b in LATENCY_BATCHES}
        out[key] = entry
    others = [RUNTIMES[k].prefix for k in RUNTIMES
              if k not in runtimes or (RUNTIMES[k].prefix and metrics.get(f"{RUNTIMES[k].prefix}unavailable"))]
    shown = {k: v for k, v in metrics.items()          # the verdict speaks of `runtimes` with figures only
             if not any(k.startswith((f"{p}latency_ms", f"reference_{p}latency_ms")) for p in others)}
    return {"runtimes": out, "verdict": runtime_verdict(shown, masked=masked),
            "measured_at": metrics.get("latency_measured_at")}


def model_card(ws, variant) -> dict:
    """The JSON-safe model card of `variant` (a Variant or an id/name) of workspace `ws`."""
    v = variant if not isinstance(variant, str) else ws.get_variant(variant)
    created = _dt.datetime.fromtimestamp(v.created_at, tz=_dt.UTC)
    metrics = dict(v.metrics)
    card = {
        "card_version": CARD_VERSION,
        "id": v.id,
        "name": v.name,
        "parent_id": v.parent_id,
        "origin": v.origin,
        "created_at": created.isoformat(timespec="seconds"),
        "created_at_unix": v.created_at,
        "arch": v.arch,
        "recipe": v.recipe,
        "metrics": metrics,
        "measured_on": metrics.get("device"),
        "latency": latency_card(metrics, masked=bool(v.kind.get("masked"))),
        "kind": {k: bool(v.kind.get(k)) for k in KIND_FLAGS},
        "kind_label": kind_label(v.kind),
        "weights_format": v.format,
        "dataset": dataset_card(v.dataset, ws.root),
        "libraries": library_versions(),
        "notes": v.notes,
    }
    return json_safe(card)


__all__ = ["dataset_card", "json_safe", "latency_card", "latency_figure", "library_versions", "model_card", "preprocessing"]

"""The latency metrics of a variant, in every runtime the engine measures: PyTorch eager on its
device, ONNX Runtime and OpenVINO on the CPU (the same exported graph), each timed in the
measurement lane together with the parent (alternately, so the ratio compares two timings taken
the same way). A figure that did not settle
is stored as NaN with the reason (`<prefix>latency_unmeasured`), never as a number.

Keys, for each runtime prefix ('' for PyTorch eager, 'ort_' for ONNX Runtime, 'ov_' for OpenVINO; see
`core.base.ratios.RUNTIMES`) and batch b in (1, 64):
`<p>latency_ms_b<b>` and its 95% interval `<p>latency_ms_b<b>_ci`, the parent timed with it
`reference_<p>latency_ms_b<b>` and the interval of the ratio `<p>latency_ms_b<b>_vs_reference_ci`.
"""
from __future__ import annotations

import copy
import math
import os
import time
from importlib import metadata

import torch
import torch.nn as nn

from core.base.ratios import GRAPH_RUNTIMES, RUNTIMES
from core.measure.lane import LatencyReport, default_budget_s, device_label, is_lane_device
from core.measure.latency import time_models
from core.measure.runtimes import DISTRIBUTIONS, OnnxUnavailable, calibration_arrays, onnx_runtime_model, time_graphs

BATCHES = (1, 64)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def report_keys(rep: LatencyReport, prefix: str, *, paired: bool) -> dict:
    """The metric keys of one runtime's report ('model' and, when `paired`, 'reference')."""
    out: dict = {}
    withheld = []
    for b in BATCHES:
        key = f"{prefix}latency_ms_b{b}"
        t = rep.timings["model"][b]
        out[key] = t.median_ms if t.settled and not rep.lane_busy else float("nan")
        out[f"{key}_ci"] = [t.low_ms, t.high_ms] if t.settled and not rep.lane_busy else None
        out[f"{key}_iqr"] = t.iqr_ms if math.isfinite(t.iqr_ms) else None
        if not t.settled or rep.lane_busy:
            withheld.append(f"batch {b}")
        if paired:
            r = rep.ratio_figure("reference", "model", b)
            out[f"reference_{key}"] = rep.ms("reference", b) if r.shown and t.settled else None
            out[f"{key}_vs_reference_ci"] = [r.low, r.high] if r.shown and t.settled else None
            if not r.shown and t.settled:
                withheld.append(f"the ratio to the parent at batch {b}")
    out[f"{prefix}latency_unmeasured"] = (f"{rep.unmeasurable_reason()} ({', '.join(withheld)})" if withheld else "")
    return out


def torch_latency(model: nn.Module, input_shape: tuple[int, ...], device: torch.device,
                  reference: nn.Module | None, budget_s: float) -> dict:
    models = {"model": model} if reference is None else {"model": model, "reference": reference}
    rep = time_models(models, input_shape, BATCHES, device, budget_s=budget_s)
    return report_keys(rep, "", paired=reference is not None) | {
        "device": device_label(device), "latency_other_cores": rep.other_cores}


def default_runtimes() -> tuple[str, ...]:
    """The runtimes a variant is timed in: env WORKBENCH_LATENCY_RUNTIMES (comma-separated keys of
    RUNTIMES, e.g. 'torch,onnxruntime'), default all of them. A server that does not want to spend
    the seconds on a runtime leaves it out; its figures then read "not measured"."""
    wanted = [r.strip() for r in os.environ.get("WORKBENCH_LATENCY_RUNTIMES", "").split(",") if r.strip()]
    return tuple(r for r in RUNTIMES if r in wanted) or tuple(RUNTIMES)


def _graphs(model: nn.Module, input_shape: tuple[int, ...], reference: nn.Module | None,
            calib_images: torch.Tensor | None) -> tuple[dict[str, bytes], str]:
    """The ONNX graphs the graph runtimes time: 'model' (its fp32 graph, or ONNX Runtime's int8
    quantization of the float parent) and, when it exports, 'reference' (the parent's graph).
    OnnxUnavailable says why there is none; made once, run by every graph runtime."""
    calib = calibration_arrays(calib_images) if calib_images is not None else None
    own, what = onnx_runtime_model(model, input_shape, reference, calib)
    graphs = {"model": own}
    if reference is not None:
        try:   # a parent without a graph (int8 itself, say) only loses the pairing
            graphs["reference"] = onnx_runtime_model(reference, input_shape, None, None)[0]
        except Exception:  # noqa: BLE001
            pass
    return graphs, what


def _no_figures(runtime: str, why: str) -> dict:
    """The keys of a graph runtime without figures: the reason, and NaN/None over older figures
    (they must not survive the merge into the variant's metrics)."""
    p = RUNTIMES[runtime].prefix
    return {f"{ref}{p}latency_ms_b{b}{end}": (float("nan") if not ref and not end else None)
            for ref in ("", "reference_") for b in BATCHES for end in ("", "_ci")} | {
        f"{p}model": None, f"{p}unavailable": why, f"{p}latency_unmeasured": ""}


def graph_latency(runtime: str, graphs: dict[str, bytes], what: str, input_shape: tuple[int, ...],
                  budget_s: float) -> dict:
    """The figures of one graph runtime ('onnxruntime', 'openvino'), or the reason there are none."""
    rt = RUNTIMES[runtime]
    if _version(DISTRIBUTIONS[runtime]) is None:
        return _no_figures(runtime, f"{DISTRIBUTIONS[runtime]} is not installed")
    try:
        rep = time_graphs(runtime, graphs, input_shape, BATCHES, budget_s=budget_s)
    except Exception as e:  # noqa: BLE001 - a runtime refuses some graphs: said, not raised
        return _no_figures(runtime, f"{rt.title} cannot run this model: {type(e).__name__}: "
                                    f"{' '.join(str(e).split())[:200]}")
    return report_keys(rep, rt.prefix, paired="reference" in graphs) | {
        rt.device_key: rep.device, f"{rt.prefix}model": what, f"{rt.prefix}unavailable": ""}


def latency_metrics(model: nn.Module, input_shape: tuple[int, ...], device: torch.device, *,
                    reference: nn.Module | None = None, calib_images: torch.Tensor | None = None,
                    runtimes: tuple[str, ...] | None = None, budget_s: float | None = None) -> dict:
    """Every latency key of `model` (on `device`, eval mode) in `runtimes` (default:
    `default_runtimes()`); `reference` is the parent (same dataset), timed with it. `budget_s` is
    per runtime."""
    budget_s = default_budget_s() if budget_s is None else budget_s
    runtimes = default_runtimes() if runtimes is None else runtimes
    out: dict = {"latency_measured_at": time.time(),
                 "latency_versions": {"torch": torch.__version__.split("+")[0],
                                      **{d: _version(d) for d in DISTRIBUTIONS.values()}}}
    if "torch" in runtimes:
        ref = copy.deepcopy(reference).to(device).eval() if reference is not None else None
        out |= torch_latency(model, input_shape, device, ref, budget_s)
    wanted = [r for r in GRAPH_RUNTIMES if r in runtimes]
    if wanted:
        cpu_model = copy.deepcopy(model).cpu().eval()
        ref = copy.deepcopy(reference).cpu().eval() if reference is not None else None
        try:
            graphs, what = _graphs(cpu_model, input_shape, ref, calib_images)
        except OnnxUnavailable as e:
            return out | {k: v for r in wanted for k, v in _no_figures(r, str(e)).items()}
        except Exception as e:  # noqa: BLE001 - quantizing the graph can fail too: said, not raised
            why = f"no ONNX graph for this model: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
            return out | {k: v for r in wanted for k, v in _no_figures(r, why).items()}
        for r in wanted:
            out |= graph_latency(r, graphs, what, input_shape, budget_s)
    return out


def legacy_latency_update(metrics: dict) -> dict | None:
    """The metrics update that retires latency figures stored before the measurement lane (their
    `device` was 'cpu: x86_64, 2 threads': neither the CPU nor the timing threads, and taken
    whatever else ran). The old figures are kept under `legacy_latency`; the latency reads as not
    measured until it is measured again. None when `metrics` needs nothing."""
    dev = metrics.get("device")
    if not dev or is_lane_device(dev):
        return None
    old = {k: v for k, v in metrics.items() if "latency" in k or k == "device"}
    update = {f"reference_{rt.prefix}latency_ms_b{b}": None for rt in RUNTIMES.values() for b in BATCHES}
    return update | {
        "legacy_latency": old, "latency_ms_b1": float("nan"), "latency_ms_b64": float("nan"),
        "latency_busy": False, "latency_other_jobs": 0,
        "device": device_label("cpu") if dev.startswith("cpu") else dev,
        "latency_unmeasured": f"not measured here yet: the stored figures were taken before the measurement lane "
                              f"(as '{dev}') and are kept aside; measure again"}


def needs_measuring(metrics: dict) -> str:
    """Why a stored variant's PyTorch eager latency should be measured (again) on this machine, or
    '': no figure (not measurable when it was made, or retired), or figures from another CPU."""
    if not isinstance(metrics.get("latency_ms_b64"), (int, float)) or math.isnan(metrics["latency_ms_b64"]):
        return metrics.get("latency_unmeasured") or "no latency measured"
    dev = metrics.get("device") or ""
    if dev.startswith("cpu") and dev != device_label("cpu"):
        return f"measured on another machine ({dev})"
    return ""

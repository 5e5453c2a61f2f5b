"""Which static int8 path to use, per runtime, measured on the shipped CNNs (lenet5, resnet-small,
their shipped baseline weights): an int8 path that outlives torch.ao.quantization FX.

Paths, each calibrated on the same training batches (`calibration_batches`, 8 x 64 images):

- FX int8 in PyTorch eager: the workbench's own path (`prepare_static` / `convert_static` of
  `core.compress.quant.quantize`, torch.ao.quantization FX graph mode, deprecated), timed against
  the float model in PyTorch eager, with PT2E's converted graph run eagerly beside them (it has no
  int8 kernels there: quantize/dequantize around float ops).
- PT2E int8 compiled: `torch.export` + torchao `X86InductorQuantizer` + `torch.compile` (Inductor
  with freezing on, which is what lowers the pattern to oneDNN int8 kernels; one specialised graph
  per batch size, as dynamic-shape compilation of the int8 convolutions fails on this torch), timed
  against the same float model compiled the same way, and against float in PyTorch eager.
- ONNX Runtime static QDQ int8 (`core.measure.runtimes.quantize_onnx(..., 'static', calib)`)
  against ONNX Runtime fp32 of the same export.

All timings go through the measurement lane (`time_models`, `time_sessions`): float and int8 of
one runtime alternately in one call, disturbed passes dropped, a figure shown only with a 95%
interval within +/-10%. Accuracy on the full test split (ONNX Runtime: the session itself run on
it). Sizes: the file the workbench stores (FX, float), the `torch.export.save` archive of the
converted program (PT2E), the .onnx bytes (ONNX Runtime). Time to quantize: wall time of the whole
path (calibration included; PT2E: export, calibration, conversion and compilation at both batch
sizes; ONNX Runtime: export, quantize_static, session), on the lane's thread count.

    nice -n 5 .venv/bin/python bench/quant_paths.py [--models lenet5 resnet-small] [--quick] [--out quant_paths]

`--quick`: 2 calibration batches, 1,000 test images, a short lane budget (a smoke run, not a
measurement; writes quant_paths_quick.*).
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch._inductor.config

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from core.compress.quant.files import encode_quantized  # noqa: E402
from core.compress.quant.quantize import QuantConfig, calibration_batches, convert_static, prepare_static  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import device_label, timing_threads  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.measure.runtimes import onnx_bytes, quantize_onnx, session, time_sessions  # noqa: E402
from core.store.variants import encode_variant, file_metadata  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"
BATCHES = (1, 64)
EAGER, COMPILED, ORT = "PyTorch eager", "torch.compile (Inductor, freezing)", "ONNX Runtime"


# ---------------------------------------------------------------- the three int8 paths

def fx_int8(model, calib):
    """The workbench's static int8 (FX graph mode, x86 backend)."""
    prepared = prepare_static(model, QuantConfig(), calib[0])
    with torch.inference_mode():
        for x in calib:
            prepared(x)
    return convert_static(prepared).eval()


def _dim():
    return ({0: torch.export.Dim("b", min=1, max=1024)},)


def pt2e_converted(model, calib):
    """PT2E: exported, annotated by X86InductorQuantizer, calibrated, converted (not yet compiled)."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(copy.deepcopy(model).eval(), (calib[0][:2],), dynamic_shapes=_dim()).module()
    prepared = prepare_pt2e(exported, q)
    with torch.no_grad():
        for x in calib:
            prepared(x)
    converted = convert_pt2e(prepared)
    allow_exported_model_train_eval(converted)   # time_models calls eval()
    return converted


def compiled(module, example: torch.Tensor):
    """`torch.compile` with freezing (the int8 lowering needs it), warmed at both batch sizes in
    inference mode (as the lane runs it), so compilation is not timed as latency."""
    torch._inductor.config.freezing = True
    c = torch.compile(module, dynamic=False)
    with torch.inference_mode():
        for b in BATCHES:
            c(example[:b])
    return c


def pt2e_archive_bytes(converted, example: torch.Tensor) -> int:
    """Bytes of the converted program saved with `torch.export.save` (int8 weights, scales, zero
    points, biases and the graph), after dropping the float weight copies convert_pt2e leaves
    unused on the module."""
    gm = copy.deepcopy(converted)
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    for name, _ in [*gm.named_parameters(), *gm.named_buffers()]:
        if name not in used:
            owner, _, attr = name.rpartition(".")
            delattr(gm.get_submodule(owner) if owner else gm, attr)
    return _archive_bytes(gm, example)


def _archive_bytes(module, example: torch.Tensor) -> int:
    buf = io.BytesIO()
    torch.export.save(torch.export.export(module, (example[:2],), dynamic_shapes=_dim()), buf)
    return len(buf.getvalue())


# ---------------------------------------------------------------- accuracy and figures

@torch.inference_mode()
def torch_accuracy(model, split) -> float:
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in split.batches(500))
    return correct / len(split)


def ort_accuracy(sess, split) -> float:
    correct = sum(int((sess.run(None, {"input": x.numpy()})[0].argmax(1) == y.numpy()).sum())
                  for x, y in split.batches(500))
    return correct / len(split)


def _ms(rep, label, b) -> dict:
    t = rep.timings[label][b]
    shown = rep.shown_ms(label, b)
    return {"ms": shown, "low": t.low_ms if shown else None, "high": t.high_ms if shown else None,
            "median_unsettled": None if shown else (t.median_ms if t.runs else None), "runs": t.runs,
            "dropped": t.dropped}


def _ratio(rep, slow, fast, b) -> dict:
    f = rep.ratio_figure(slow, fast, b)
    return {"x": f.value, "low": f.low if f.shown else None, "high": f.high if f.shown else None,
            "reason": "" if f.shown else f.reason}


def row(model, runtime, path, *, rep, label, ref, size, size_ref, acc, acc_ref, seconds, note="") -> dict:
    r = {"model": model, "runtime": runtime, "path": path, "bytes": size,
         "size_vs_float": round(size / size_ref, 4) if size and size_ref else None,
         "accuracy": acc, "accuracy_change_pt": round(100 * (acc - acc_ref), 2) if acc is not None else None,
         "quantize_s": round(seconds, 1) if seconds is not None else None, "note": note,
         "reference": ref, "other_cores": rep.other_cores, "unmeasurable": ""}
    for b in BATCHES:
        r[f"b{b}"] = _ms(rep, label, b)
        r[f"b{b}_speedup"] = _ratio(rep, ref, label, b) if ref and ref != label else None
    if any(r[f"b{b}"]["ms"] is None for b in BATCHES) or any(
            r[f"b{b}_speedup"] and r[f"b{b}_speedup"]["x"] is None for b in BATCHES):
        r["unmeasurable"] = rep.unmeasurable_reason()
    return r


# ---------------------------------------------------------------- one model

def measure(ws, name: str, quick: bool, budget_s: float, wait_s: float) -> list[dict]:
    v = ws.get_variant(f"base-{name}")
    model = ws.load_model(v).eval()
    data = cached_dataset(v.dataset)
    test = data.test.subset(1000, seed=0) if quick else data.test
    calib = calibration_batches(data.train, 2 if quick else 8)
    shape = tuple(test.images.shape[1:])
    float_bytes = len(encode_variant(model, name=name, dataset=v.dataset, arch=v.arch)[0])
    acc_float = torch_accuracy(model, test)
    print(f"{name}: float {acc_float:.4f} on {len(test):,} test images", flush=True)

    t = time.perf_counter()
    fx = fx_int8(model, calib)
    fx_s = time.perf_counter() - t
    t = time.perf_counter()
    converted = pt2e_converted(model, calib)
    pt2e = compiled(converted, calib[0])
    pt2e_s = time.perf_counter() - t
    t = time.perf_counter()
    float_c = compiled(copy.deepcopy(model), calib[0])
    float_c_s = time.perf_counter() - t
    print(f"{name}: FX {fx_s:.1f} s, PT2E {pt2e_s:.1f} s (float compiled {float_c_s:.1f} s)", flush=True)

    t = time.perf_counter()
    fp32 = onnx_bytes(model, shape)
    s32 = session(fp32)
    ort32_s = time.perf_counter() - t
    t = time.perf_counter()
    qdq = quantize_onnx(onnx_bytes(model, shape), "static", [x.numpy() for x in calib])
    s8 = session(qdq)
    ort8_s = time.perf_counter() - t

    eager = time_models({"float32": model, "FX int8": fx, "PT2E int8, not compiled": converted}, shape, BATCHES,
                        "cpu", budget_s=budget_s, wait_s=wait_s)
    comp = time_models({"float32 compiled": float_c, "PT2E int8": pt2e, "float32 eager": model}, shape, BATCHES,
                       "cpu", budget_s=budget_s, wait_s=wait_s)
    ort = time_sessions({"fp32": s32, "int8 QDQ": s8}, shape, BATCHES, budget_s=budget_s, wait_s=wait_s)

    acc_fx, acc_pt2e = torch_accuracy(fx, test), torch_accuracy(pt2e, test)
    acc_o32, acc_o8 = ort_accuracy(s32, test), ort_accuracy(s8, test)
    pt2e_bytes, float_pt2_bytes = pt2e_archive_bytes(converted, calib[0]), _archive_bytes(model, calib[0])
    fx_bytes = len(encode_quantized(fx, QuantConfig(), file_metadata(f"{name} int8", v.dataset, v.arch))[0])

    common = {"acc_ref": acc_float}
    rows = [
        row(name, EAGER, "float32", rep=eager, label="float32", ref=None, size=float_bytes, size_ref=float_bytes,
            acc=acc_float, seconds=None, note="workbench file (safetensors)", **common),
        row(name, EAGER, "FX int8", rep=eager, label="FX int8", ref="float32", size=fx_bytes, size_ref=float_bytes,
            acc=acc_fx, seconds=fx_s, note="workbench file (safetensors)", **common),
        row(name, EAGER, "PT2E int8, not compiled", rep=eager, label="PT2E int8, not compiled", ref="float32",
            size=None, size_ref=None, acc=None, seconds=None,
            note="the converted graph run eagerly: quantize/dequantize around float kernels", **common),
        row(name, COMPILED, "float32", rep=comp, label="float32 compiled", ref=None, size=float_pt2_bytes,
            size_ref=float_pt2_bytes, acc=None, seconds=float_c_s, note="torch.export.save archive; compile time",
            **common),
        row(name, COMPILED, "PT2E int8", rep=comp, label="PT2E int8", ref="float32 compiled", size=pt2e_bytes,
            size_ref=float_pt2_bytes, acc=acc_pt2e, seconds=pt2e_s, note="torch.export.save archive", **common),
        row(name, ORT, "fp32", rep=ort, label="fp32", ref=None, size=len(fp32), size_ref=len(fp32), acc=acc_o32,
            seconds=ort32_s, note=".onnx; export + session", **common),
        row(name, ORT, "int8 QDQ", rep=ort, label="int8 QDQ", ref="fp32", size=len(qdq), size_ref=len(fp32),
            acc=acc_o8, seconds=ort8_s, note=".onnx; export + quantize_static + session", **common),
    ]
    rows[4]["vs_float_eager"] = {f"b{b}": _ratio(comp, "float32 eager", "PT2E int8", b) for b in BATCHES}
    rows[4]["float_eager_in_compiled_call"] = {f"b{b}": _ms(comp, "float32 eager", b) for b in BATCHES}
    for r in rows:
        print({k: r[k] for k in ("runtime", "path", "bytes", "accuracy", "quantize_s")},
              {f"b{b}": (r[f"b{b}"]["ms"], (r[f"b{b}_speedup"] or {}).get("x")) for b in BATCHES}, flush=True)
    return rows


# ---------------------------------------------------------------- the table

def _fmt_ms(m: dict) -> str:
    return "not measurable" if m["ms"] is None else f"{m['ms']:.3g} ({m['low']:.3g}-{m['high']:.3g})"


def _fmt_x(x: dict | None) -> str:
    if x is None:
        return "(reference)"
    return "not measurable" if x["x"] is None else f"{x['x']:.2f}x ({x['low']:.2f}-{x['high']:.2f})"


def table(rows: list[dict]) -> str:
    cols = ["model", "runtime", "path", "file bytes", "size / float", "test accuracy", "change (pt)",
            "b1 ms (95%)", "b64 ms (95%)", "speed-up b1 (95%)", "speed-up b64 (95%)", "quantize s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["model"], r["runtime"], r["path"], f"{r['bytes']:,}" if r["bytes"] else "-",
                 f"{r['size_vs_float']:.1%}" if r["size_vs_float"] else "-",
                 f"{r['accuracy']:.2%}" if r["accuracy"] is not None else "-",
                 f"{r['accuracy_change_pt']:+.2f}" if r["accuracy_change_pt"] is not None else "-",
                 _fmt_ms(r["b1"]), _fmt_ms(r["b64"]), _fmt_x(r["b1_speedup"]), _fmt_x(r["b64_speedup"]),
                 f"{r['quantize_s']:.1f}" if r["quantize_s"] is not None else "-"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def notes(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        if "vs_float_eager" in r:
            v = r["vs_float_eager"]
            lines.append(f"- {r['model']}: PT2E int8 compiled vs float32 in PyTorch eager (timed in the same call): "
                         f"b1 {_fmt_x(v['b1'])}, b64 {_fmt_x(v['b64'])}.")
        if r["unmeasurable"]:
            lines.append(f"- {r['model']} {r['runtime']} {r['path']}: a figure withheld, {r['unmeasurable']}.")
    cores = sorted({round(r["other_cores"], 1) for r in rows if r["other_cores"] is not None})
    if cores:
        lines.append(f"- Other processes used {cores[0]}-{cores[-1]} cores during the lane calls; only undisturbed "
                     "passes were kept.")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet5", "resnet-small"])
    ap.add_argument("--quick", action="store_true", help="few images, a short lane budget: a smoke run")
    ap.add_argument("--budget", type=float, default=None, help="seconds per lane call (default 90, quick 4)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = args.out or ("quant_paths_quick" if args.quick else "quant_paths")
    budget = args.budget or (4.0 if args.quick else 90.0)
    torch.set_num_threads(timing_threads())   # calibration and compilation on the threads the lane times with
    import onnxruntime
    import torchao
    device = device_label("cpu")
    started = time.strftime("%Y-%m-%d %H:%M")
    ws = Workspace(tempfile.mkdtemp(), seed_baselines=True)
    rows = [r for name in args.models for r in measure(ws, name, args.quick, budget, 1200.0)]
    cmd = "nice -n 5 .venv/bin/python bench/quant_paths.py" + (" --quick" if args.quick else "") + \
          (f" --models {' '.join(args.models)}" if args.models != ["lenet5", "resnet-small"] else "")
    head = (f"# Static int8 paths: FX vs PT2E vs ONNX Runtime QDQ\n\n"
            f"Device: {device} (torch {torch.__version__}, torchao {torchao.__version__}, onnxruntime "
            f"{onnxruntime.__version__}), {started}.\n\nCommand: `{cmd}`. Shipped baselines; calibration on "
            f"{2 if args.quick else 8} x 64 training images for every path; accuracy on "
            f"{'1,000 test images' if args.quick else 'the full test split (10,000 images)'}. Latency: median "
            "of undisturbed passes with its 95% interval, through the measurement lane; each runtime's float and "
            "int8 alternately in one call; speed-up over the float model of the same runtime (its interval in "
            "brackets). Sizes: the workbench's safetensors file (PyTorch eager), the `torch.export.save` archive "
            "(torch.compile), the .onnx model (ONNX Runtime). Quantize s: wall time of the path, calibration "
            "included (PT2E: export, calibration, conversion, compilation at batch 1 and 64).\n\n")
    text = head + table(rows) + "\n" + notes(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{out}.md").write_text(text)
    (RESULTS / f"{out}.json").write_text(json.dumps(
        {"device": device, "command": cmd, "date": started, "torch": torch.__version__,
         "torchao": torchao.__version__, "onnxruntime": onnxruntime.__version__, "rows": rows},
        indent=1, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)))
    print(text)


if __name__ == "__main__":
    main()

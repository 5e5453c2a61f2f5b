"""The runtimes people deploy with, ONNX Runtime and OpenVINO: the one ONNX export of the engine
(also used by the ONNX download), int8 as a QDQ model, and both timed in the measurement lane.

Both run the same ONNX graph. A float variant runs as its fp32 graph. An int8 variant runs as the same
quantization of its float parent, made by ONNX Runtime: `quantize_static` to a QDQ model
(per-channel int8 weights, uint8 activations calibrated on a few images) for static int8, and
`quantize_dynamic` for dynamic int8. The calibration images only set the activation scales, which
do not change the speed; these figures are latencies, never accuracies. OpenVINO reads the same
graph (a QDQ graph becomes its int8 kernels) and compiles it once per batch size, static shapes,
on the lane's threads. Measured here before deciding to add it (batch 64, 1 thread, AVX-512 VNNI,
f32 precision): LeNet-5 fp32 4.4 ms in OpenVINO, 5.7 ms in ONNX Runtime, 12 ms in PyTorch eager;
its int8 QDQ 1.8 ms in OpenVINO (2.45x its fp32). It runs inference on the calling thread (thread
CPU time = wall time), so the lane's preemption rule holds for it.
"""
from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from core.measure.lane import LatencyReport, Pass, run_lane, timing_threads

ONNX_OPSET = 17
ORT_RUNTIME = "ONNX Runtime"
DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino"}   # runtime -> the package that provides it


class OnnxUnavailable(RuntimeError):
    """The model has no ONNX graph (the exporter cannot map one of its modules), said plainly."""


def export_onnx(model: nn.Module, example: torch.Tensor, out) -> None:
    """`model` (eval, CPU) as an ONNX graph written to `out` (a path or a binary buffer): input
    `input` (N, C, H, W), output `logits`, dynamic batch. The exporter's chatter is swallowed;
    OnnxUnavailable gives its first line."""
    chatter = io.StringIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), out if not isinstance(out, Path) else str(out), dynamo=False,
                              input_names=["input"], output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - the exporter's many error types: said plainly
        first = " ".join(str(e).split("\n")[0].split())[:240]
        raise OnnxUnavailable(f"PyTorch's ONNX exporter cannot export this model: {type(e).__name__}: {first}") from None


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    export_onnx(model.eval(), torch.zeros(2, *input_shape), buf)
    return buf.getvalue()


def int8_kind(model: nn.Module) -> str | None:
    """'static' or 'dynamic' for a model with int8 kernels (torch.ao quantized modules), else None."""
    kinds = {("dynamic" if ".dynamic." in type(m).__module__ else "static")
             for m in model.modules() if ".quantized." in type(m).__module__ and "Quantized" not in type(m).__name__}
    # dynamic int8 Linear holds packed-params submodules that live in the static package: any dynamic module decides
    return "dynamic" if "dynamic" in kinds else ("static" if kinds else None)


def quantize_onnx(fp32: bytes, kind: str, calib: list[np.ndarray] | None = None) -> bytes:
    """The int8 ONNX model ONNX Runtime makes from an fp32 one: static QDQ (per-channel weights,
    activations calibrated on `calib`) or dynamic."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib or [])

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"input": x}

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        src, pre, out = Path(d, "fp32.onnx"), Path(d, "pre.onnx"), Path(d, "int8.onnx")
        src.write_bytes(fp32)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - optional graph clean-up; quantization works without it
            pre = src
        if kind == "dynamic":
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
        else:
            quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return out.read_bytes()


def session(model_bytes: bytes):
    """An ONNX Runtime CPU session on the lane's thread count, all graph optimisations on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = timing_threads()
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


def _run(sess, x: np.ndarray) -> Pass:
    return lambda: sess.run(None, {"input": x})


def ort_passes(model_bytes: bytes, inputs: dict[int, np.ndarray]) -> dict[int, Pass]:
    sess = session(model_bytes)
    return {b: _run(sess, x) for b, x in inputs.items()}


def openvino_passes(model_bytes: bytes, inputs: dict[int, np.ndarray]) -> dict[int, Pass]:
    """One OpenVINO infer request per batch size, compiled for that static shape on the CPU with
    the lane's threads, one stream, latency hint, and f32 precision: on a CPU with bf16 support
    OpenVINO would otherwise compute an fp32 graph in bf16 (a different, less exact model), and the
    figure would not be the fp32 model's."""
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": timing_threads(), "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "ENABLE_CPU_PINNING": False, "INFERENCE_PRECISION_HINT": "f32"}
    passes = {}
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "model.onnx")
        path.write_bytes(model_bytes)
        for b, x in inputs.items():
            model = core.read_model(str(path))
            model.reshape({model.input(0).get_any_name(): list(x.shape)})
            request = core.compile_model(model, "CPU", config).create_infer_request()
            passes[b] = (lambda r=request, x=x: r.infer({0: x}))
    return passes


GRAPH_PASSES = {"onnxruntime": ort_passes, "openvino": openvino_passes}


def _inputs(input_shape: tuple[int, ...], batches: tuple[int, ...]) -> dict[int, np.ndarray]:
    """The same seeded float32 batches for every graph timing (values do not change the speed)."""
    rng = np.random.default_rng(0)
    return {b: rng.standard_normal((b, *input_shape)).astype(np.float32) for b in batches}


def time_graphs(runtime: str, graphs: dict[str, bytes], input_shape: tuple[int, ...],
                batches: tuple[int, ...] = (1, 64), *, budget_s: float | None = None, **kwargs) -> LatencyReport:
    """Time ONNX graphs (label -> model bytes) in `runtime` ('onnxruntime' or 'openvino'),
    alternately, in the lane."""
    inputs = _inputs(input_shape, batches)
    passes = {label: GRAPH_PASSES[runtime](data, inputs) for label, data in graphs.items()}
    return run_lane(passes, device="cpu", budget_s=budget_s, **kwargs)


def time_sessions(sessions: dict[str, object], input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 64),
                  *, budget_s: float | None = None, **kwargs) -> LatencyReport:
    """Time ONNX Runtime sessions alternately in the lane, as `core.measure.latency.time_models` times modules."""
    inputs = _inputs(input_shape, batches)
    passes = {label: {b: _run(s, x) for b, x in inputs.items()} for label, s in sessions.items()}
    return run_lane(passes, device="cpu", budget_s=budget_s, **kwargs)


def calibration_arrays(images: torch.Tensor, n: int = 4, batch: int = 32) -> list[np.ndarray]:
    """A few batches of float32 images (N, C, H, W) as numpy, to calibrate a static QDQ model."""
    x = images[: n * batch].float().cpu().numpy()
    return [x[i:i + batch] for i in range(0, len(x), batch)]


def onnx_runtime_model(model: nn.Module, input_shape: tuple[int, ...], float_source: nn.Module | None,
                       calib: list[np.ndarray] | None) -> tuple[bytes, str]:
    """(ONNX bytes, what they are) for timing `model` in ONNX Runtime: its fp32 graph, or for an
    int8 model the same quantization of `float_source` by ONNX Runtime. OnnxUnavailable says why not."""
    kind = int8_kind(model)
    if kind is None:
        return onnx_bytes(model, input_shape), "fp32"
    if float_source is None or int8_kind(float_source) is not None:
        raise OnnxUnavailable("an int8 model is timed in ONNX Runtime as its float parent quantized by ONNX Runtime, "
                              "and this one has no float parent to start from")
    fp32 = onnx_bytes(float_source, input_shape)
    if kind == "dynamic":
        return quantize_onnx(fp32, "dynamic"), "int8 (dynamic, ONNX Runtime quantize_dynamic)"
    return quantize_onnx(fp32, "static", calib), "int8 QDQ (static, ONNX Runtime quantize_static)"

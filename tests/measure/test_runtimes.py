"""ONNX Runtime as a measured runtime (core.measure.runtimes, core.measure.speed): the one ONNX
export, int8 as ONNX Runtime's own quantization of the float parent, sessions on the lane's
threads, and a plain reason where a model has no ONNX Runtime figure."""
import math

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from core.compress.quant.quantize import QuantConfig, quantize
from core.measure import runtimes
from core.measure.lane import device_label, timing_threads
from core.measure.speed import latency_metrics


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()


def test_the_fp32_graph_computes_what_the_module_does():
    m, x = _net(), torch.randn(5, 1, 28, 28)
    sess = runtimes.session(runtimes.onnx_bytes(m, (1, 28, 28)))
    out = sess.run(None, {"input": x.numpy()})[0]          # a batch other than the export's: the batch is dynamic
    assert np.abs(out - m(x).detach().numpy()).max() < 1e-4
    assert sess.get_session_options().intra_op_num_threads == timing_threads()


def test_int8_is_onnx_runtimes_own_quantization_of_the_float_parent():
    m = _net()
    calib = [torch.randn(8, 1, 28, 28) for _ in range(2)]
    static, _ = quantize(m, QuantConfig(mode="static-int8"), calib)
    assert runtimes.int8_kind(static) == "static" and runtimes.int8_kind(m) is None
    data, what = runtimes.onnx_runtime_model(static, (1, 28, 28), m, [c.numpy() for c in calib])
    ops = {n.op_type for n in onnx.load_from_string(data).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and what.startswith("int8 QDQ")
    x = torch.randn(16, 1, 28, 28)
    out = runtimes.session(data).run(None, {"input": x.numpy()})[0]
    assert (out.argmax(1) == m(x).argmax(1).numpy()).mean() >= 0.8      # the same model, rounded to int8
    with pytest.raises(runtimes.OnnxUnavailable, match="no float parent"):
        runtimes.onnx_runtime_model(static, (1, 28, 28), None, None)


def test_onnx_runtime_figures_are_timed_with_the_parent_in_the_lane():
    m = _net()
    child = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 26 * 26, 10)).eval()
    got = latency_metrics(child, (1, 28, 28), torch.device("cpu"), reference=m, runtimes=("onnxruntime",), budget_s=2)
    assert got["ort_device"] == device_label("cpu") and got["ort_model"] == "fp32" and got["ort_unavailable"] == ""
    assert "latency_ms_b64" not in got                      # PyTorch eager was not asked for
    for b in (1, 64):
        v, ci, ref = got[f"ort_latency_ms_b{b}"], got[f"ort_latency_ms_b{b}_ci"], got[f"reference_ort_latency_ms_b{b}"]
        if math.isnan(v):                                   # withheld on a busy machine, with the reason
            assert got["ort_latency_unmeasured"].startswith("not measurable now") and ci is None
        else:
            assert ci[0] <= v <= ci[1] and (ref is None or ref > 0)


def test_a_model_without_an_onnx_graph_says_why_and_clears_older_figures(monkeypatch):
    def refuse(model, input_shape):
        raise runtimes.OnnxUnavailable("PyTorch's ONNX exporter cannot export this model: FancyOp")

    monkeypatch.setattr(runtimes, "onnx_bytes", refuse)
    got = latency_metrics(_net(), (1, 28, 28), torch.device("cpu"), runtimes=("onnxruntime",), budget_s=1)
    assert got["ort_unavailable"].endswith("FancyOp") and got["ort_model"] is None
    assert math.isnan(got["ort_latency_ms_b64"]) and got["reference_ort_latency_ms_b64"] is None


def test_openvino_runs_the_same_graph_on_the_lanes_threads_and_is_timed_in_the_lane():
    m, x = _net(), torch.randn(3, 1, 28, 28)
    data = runtimes.onnx_bytes(m, (1, 28, 28))
    passes = runtimes.openvino_passes(data, {3: x.numpy()})     # compiled for batch 3
    out = passes[3]()
    got = next(iter(out.values())) if isinstance(out, dict) else out[0]
    assert np.abs(np.asarray(got) - m(x).detach().numpy()).max() < 1e-4
    rep = runtimes.time_graphs("openvino", {"model": data}, (1, 28, 28), (1,), budget_s=1)
    t = rep.timings["model"][1]
    assert rep.device == device_label("cpu") and t.runs + t.dropped > 0
    got = latency_metrics(m, (1, 28, 28), torch.device("cpu"), runtimes=("openvino",), budget_s=1)
    assert got["ov_device"] == device_label("cpu") and got["ov_model"] == "fp32" and got["ov_unavailable"] == ""
    assert "ort_latency_ms_b1" not in got and ("ov_latency_ms_b1" in got)

"""Quantization: every mode makes a variant that reloads exactly in a fresh process; files hold only
tensors and JSON; coverage tells which layers were touched; sizes and errors are real."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open

from core.base.paths import REPO_ROOT
from core.cli.main import main
from core.compress.quant.quantize import (
    NO_SPEEDUP_TEXT,
    FxUnavailable,
    QuantConfig,
    calibration_batches,
    coverage_warning,
    fx_available,
    plan,
    prepare_static,
    quantize,
    speed_verdict,
    structure,
    worst_layers,
)
from core.formats.quant import kbit_dequantize, kbit_quantize, pack_bits, unpack_bits
from core.tasks import QuantizeJobConfig, TaskContext, run_task

REPO = REPO_ROOT
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A workspace with the shipped, trained baselines (quantizing an untrained model proves nothing)."""
    from core.store.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("quant") / "ws", seed_baselines=True)


def _quantize(ws, variant: str, **quant) -> object:
    cfg = QuantizeJobConfig(variant=variant, quant=QuantConfig(**quant), device="cpu")
    out = run_task("quantize", cfg, TaskContext(ws))
    return ws.get_variant(out.variant_id), out.result["report"]


def _fresh_process_logits(ws, vid: str, x: torch.Tensor) -> torch.Tensor:
    torch.save({"x": x}, ws.root / "x.pt")
    code = ("import sys, torch; from core.store.workspace import Workspace; ws = Workspace(sys.argv[1], seed_baselines=False);"
            "m = ws.load_model(sys.argv[2]); x = torch.load(sys.argv[3])['x'];"
            "torch.save(m(x).detach(), sys.argv[4])")
    subprocess.run([sys.executable, "-W", "ignore", "-c", code, str(ws.root), vid, str(ws.root / "x.pt"),
                    str(ws.root / "out.pt")], check=True, cwd=REPO, timeout=180)
    return torch.load(ws.root / "out.pt")


@pytest.mark.parametrize("variant, quant", [
    ("base-lenet5", {"mode": "static-int8", "calib_batches": 2}),
    ("base-lenet300", {"mode": "dynamic-int8"}),
    ("base-lenet300", {"mode": "fp16"}),
    ("base-lenet300", {"mode": "bf16"}),
    ("base-lenet5", {"mode": "weight-only", "bits": 4}),
    ("base-lenet300", {"mode": "weight-only", "bits": 3, "symmetric": False}),
])
def test_every_mode_reloads_in_a_fresh_process_to_the_same_predictions(shipped, fashion, variant, quant):
    v, report = _quantize(shipped, variant, **quant)
    assert v.parent_id == variant and v.recipe[-1]["step"] == "quantize" and v.recipe[-1]["mode"] == quant["mode"]
    assert v.kind["quantized"] == (quant["mode"] != "weight-only")
    assert v.kind["simulated"] == (quant["mode"] == "weight-only")
    parent = shipped.get_variant(variant)
    assert v.metrics["size_bytes"] == shipped.weights_path(v).stat().st_size < parent.metrics["size_bytes"]
    assert abs(v.metrics["accuracy"] - parent.metrics["accuracy"]) < 0.03
    assert v.metrics["params"] > 0.99 * parent.metrics["params"] - 200   # BN folded into convs, otherwise all
    if quant["mode"] in ("static-int8", "dynamic-int8"):
        assert v.metrics["device"].startswith("cpu")
    x, _ = next(fashion.test.batches(256))
    with torch.no_grad():
        here = shipped.load_model(v)(x)
    assert torch.equal(here, _fresh_process_logits(shipped, v.id, x))
    # the stored accuracy is that decoded model's, on the full test split
    from core.measure.metrics import accuracy
    assert v.metrics["accuracy"] == accuracy(shipped.load_model(v), fashion.test)


def test_an_int8_file_holds_only_tensors_and_json_metadata(shipped):
    v, _ = _quantize(shipped, "base-lenet5", mode="static-int8", calib_batches=1)
    with safe_open(str(shipped.weights_path(v)), framework="pt") as f:
        meta = f.metadata()
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes <= {"I8", "F32", "F64", "I32", "I64", "U8"}
    assert "I8" in dtypes                               # the weights really are int8
    config = json.loads(meta["workbench_quant_config"])
    assert config["mode"] == "static-int8"
    json.loads(meta["workbench_quant_layout"])
    json.loads(meta["arch"])
    raw = shipped.weights_path(v).read_bytes()
    assert b"pickle" not in raw and b"\x80\x04" not in raw[:16]


def test_static_int8_sizes_and_a_pruned_parent_store_both_savings(shipped):
    """int8 alone is about a quarter of float32; a 90%-pruned lenet5 quantized to int8 is smaller
    than either the pruned-only or the int8-only variant (sparse positions plus int8 values)."""
    base = shipped.get_variant("base-lenet5")
    int8, _ = _quantize(shipped, "base-lenet5", mode="static-int8", calib_batches=2)
    assert int8.metrics["size_bytes"] <= 0.27 * base.metrics["size_bytes"]
    pruned_id = run_task("prune", {"variant": base.id, "prune": {"amount": 0.9, "scope": "global"}, "device": "cpu"},
                         TaskContext(shipped)).variant_id
    pruned = shipped.get_variant(pruned_id)
    both, _ = _quantize(shipped, pruned_id, mode="static-int8", calib_batches=2)
    assert both.kind["masked"] and both.kind["quantized"]
    assert both.metrics["size_bytes"] < min(pruned.metrics["size_bytes"], int8.metrics["size_bytes"])
    assert both.metrics["nonzero_params"] < 0.15 * both.metrics["params"]
    assert abs(both.metrics["accuracy"] - pruned.metrics["accuracy"]) < 0.01


def test_dynamic_int8_of_a_conv_model_says_it_covers_few_layers(shipped):
    model = shipped.load_model("base-resnet-small")
    cfg = QuantConfig(mode="dynamic-int8")
    rows = plan(model, cfg)
    convs = [r for r in rows if r.type == "Conv2d"]
    assert convs and all(r.action == "unsupported" and "no convolution kernels" in r.detail for r in convs)
    warning = coverage_warning(rows, cfg)
    assert warning and "1 of 10" in warning and "stem.0" in warning
    # and the same after running, read off the converted model
    v, report = _quantize(shipped, "base-resnet-small", mode="dynamic-int8")
    assert report["warning"] and "1 of 10" in report["warning"]
    after = {r["name"]: r["action"] for r in report["coverage_after"]}
    assert after["fc"] == "quantized" and after["stem.0"] == "unsupported"


def test_static_coverage_folds_batchnorm_and_honours_keep_float(shipped, fashion):
    model = shipped.load_model("base-resnet-small")
    calib = calibration_batches(fashion.train, 2)
    q, report = quantize(model, QuantConfig(mode="static-int8", calib_batches=2, keep_float=("fc",)), calib)
    after = {r.name: r for r in report.coverage_after}
    assert after["stem.1"].action == "folded"
    assert after["fc"].action == "float" and "your choice" in after["fc"].detail
    assert after["layers.0.conv1"].action == "quantized"
    assert report.warning is None                        # a layer kept on request is not a silent skip
    assert isinstance(dict(q.named_modules())["fc"], torch.nn.Linear)
    assert {e.name for e in report.errors} == {n for n, r in after.items() if r.action == "quantized"}
    assert all(e.weight_sqnr_db > 30 and e.output_sqnr_db > 15 for e in report.errors)
    assert report.agreement > 0.95 and report.logits_sqnr_db > 15


def test_fewer_bits_cost_more_error_and_the_worst_layers_come_first(shipped, fashion):
    model = shipped.load_model("base-lenet5")
    calib = calibration_batches(fashion.train, 2)
    sqnr = {}
    for bits in (8, 4, 2):
        _, rep = quantize(model, QuantConfig(mode="weight-only", bits=bits), calib)
        sqnr[bits] = {e.name: e.weight_sqnr_db for e in rep.errors}
        if bits == 2:
            worst = worst_layers(rep.errors, 2)
            ordered = sorted(rep.errors, key=lambda e: e.output_sqnr_db)
            assert worst == [ordered[0].name, ordered[1].name]
    for name in sqnr[8]:
        assert sqnr[8][name] > sqnr[4][name] + 15 > sqnr[2][name] + 15   # about 6 dB per bit
    with pytest.raises(ValueError, match="does not have"):
        quantize(model, QuantConfig(mode="weight-only", keep_float=("nope",)), calib)


@pytest.mark.parametrize("bits", range(2, 9))
def test_kbit_codes_pack_and_unpack_exactly(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(7, 13, generator=g)
    w[:, :5] = 0                                   # pruned zeros stay exactly zero
    for symmetric in (True, False):
        codes, scale, zp, _ = kbit_quantize(w, bits, symmetric)
        assert int(codes.max()) < 2 ** bits
        back = unpack_bits(pack_bits(codes.reshape(-1).numpy(), bits), bits, codes.numel())
        assert (back == codes.reshape(-1).numpy()).all()
        deq = kbit_dequantize(codes, scale, zp)
        assert (deq[:, :5] == 0).all()
        assert (deq - w).abs().max() <= scale.max() * 0.5 + 1e-6


def test_speed_verdict_rule():
    assert speed_verdict({"latency_ms_b64": 10.0, "reference_latency_ms_b64": 10.5}) == NO_SPEEDUP_TEXT
    assert speed_verdict({"latency_ms_b64": 10.0, "reference_latency_ms_b64": 12.0}) is None
    assert speed_verdict({"latency_ms_b64": 10.0}) is None
    assert speed_verdict({"latency_ms_b64": math.nan, "reference_latency_ms_b64": 1.0}) is None


def test_the_cli_says_no_real_speed_up_beside_the_figure(shipped, monkeypatch, capsys):
    """Timings cannot be forced on a shared CPU: make every forward pass take the same time, so
    the quantized child is measured exactly as fast as its parent, and read what the CLI prints."""
    import core.measure.speed as speed

    real = speed.time_models

    def same_speed(models, *args, **kwargs):
        rep = real(models, *args, **kwargs)
        first = next(iter(rep.timings.values()))
        for label in rep.timings:
            rep.timings[label] = dict(first)
        return rep
    monkeypatch.setattr(speed, "time_models", same_speed)
    assert main(["--workspace", str(shipped.root), "quantize", "base-lenet300", "--mode", "dynamic-int8"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "vs float parent" in ln)
    assert NO_SPEEDUP_TEXT in line and "(1.00x)" in line
    assert "coverage: 3 of 3 layers quantized" in out


def test_qat_trains_with_fake_quant_then_converts_to_static_int8(shipped, fashion):
    cfg = QuantizeJobConfig(variant="base-lenet5", quant=QuantConfig(mode="qat", calib_batches=1), subset=256,
                            device="cpu", train={"epochs": 1, "lr": 1e-4, "batch_size": 64, "weight_decay": 0.0})
    events = []
    out = run_task("quantize", cfg, TaskContext(shipped, on_event=events.append))
    v = shipped.get_variant(out.variant_id)
    assert v.kind["quantized"] and v.recipe[-1]["mode"] == "qat" and v.recipe[-1]["subset"] == 256
    assert any(e.get("stage") == "qat" and e.get("kind") == "epoch_end" for e in events)
    assert abs(v.metrics["accuracy"] - shipped.get_variant("base-lenet5").metrics["accuracy"]) < 0.03
    x, _ = next(fashion.test.batches(64))
    with torch.no_grad():
        here = shipped.load_model(v)(x)
    assert torch.equal(here, _fresh_process_logits(shipped, v.id, x))


def test_a_quantized_variant_cannot_be_quantized_or_pruned_again(shipped):
    v, _ = _quantize(shipped, "base-lenet300", mode="weight-only", bits=8)
    with pytest.raises(ValueError, match="float parent"):
        run_task("quantize", QuantizeJobConfig(variant=v.id), TaskContext(shipped))
    with pytest.raises(ValueError, match="float parent"):
        run_task("prune", {"variant": v.id, "prune": {"amount": 0.5}}, TaskContext(shipped))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", ["fp16", "bf16", "weight-only"])
def test_half_precision_and_kbit_children_are_measured_on_the_gpu(shipped, mode):
    cfg = QuantizeJobConfig(variant="base-lenet5", quant=QuantConfig(mode=mode, bits=4), device="cuda")
    v = shipped.get_variant(run_task("quantize", cfg, TaskContext(shipped)).variant_id)
    assert v.metrics["device"].startswith("cuda")
    assert abs(v.metrics["accuracy"] - shipped.get_variant("base-lenet5").metrics["accuracy"]) < 0.03


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_int8_children_are_measured_on_the_cpu_even_with_a_gpu(shipped):
    cfg = QuantizeJobConfig(variant="base-lenet5", quant=QuantConfig(mode="static-int8", calib_batches=1), device="cuda")
    v = shipped.get_variant(run_task("quantize", cfg, TaskContext(shipped)).variant_id)
    assert v.metrics["device"].startswith("cpu")


def test_measuring_an_int8_variant_again_stays_on_the_cpu(shipped, monkeypatch):
    from core.compress.quant.quantize import runs_on_cpu_only
    from core.tasks import MeasureJobConfig

    v, _ = _quantize(shipped, "base-lenet300", mode="dynamic-int8")
    assert runs_on_cpu_only(v) and not runs_on_cpu_only(shipped.get_variant("base-lenet300"))
    out = run_task("measure", MeasureJobConfig(variant=v.id, what="latency", device="auto"), TaskContext(shipped))
    assert shipped.get_variant(out.variant_id).metrics["device"].startswith("cpu")
    m = shipped.get_variant(v.id).metrics      # timed with its parent, or withheld on a busy machine with why
    assert (m["reference_latency_ms_b64"] or 0) > 0 or m["latency_unmeasured"].startswith("not measurable now")


def test_half_precision_on_the_cpu_says_how_it_compares_with_float32(shipped, fashion):
    model = shipped.load_model("base-lenet300")
    _, report = quantize(model, QuantConfig(mode="fp16"), calibration_batches(fashion.train, 1))
    note = report.notes[0]
    assert "On this CPU, float32 -> fp16 timed now on cpu" in note
    if "not measurable now" in note:                      # withheld on a busy machine: no figure at all
        assert " ms -> " not in note
        return
    # the verdict is the one its own two timings give (which way it goes depends on this CPU's kernels)
    m = re.search(r"batch 64 (\d+\.\d\d) ms -> (\d+\.\d\d) ms, (\d+\.\d\d)x (slower|faster) \(95% interval "
                  r"(\d+\.\d\d)x-(\d+\.\d\d)x\)", note)
    assert m, note
    full, half, times, verdict, low, high = float(m[1]), float(m[2]), float(m[3]), m[4], float(m[5]), float(m[6])
    assert half > 0 and full > 0 and low <= times <= high
    if half != full:                                      # the printed figures are rounded: equal says nothing
        assert verdict == ("slower" if half > full else "faster"), note
        ratio = max(half, full) / min(half, full)           # and its "N.NNx" is their ratio, up to the rounding
        assert abs(times - ratio) <= 0.01 + ratio * (0.005 / half + 0.005 / full) + 1e-9, note


@pytest.mark.parametrize("half_ms, verdict", [(3.0, "3.00x slower (95% interval 3.00x-3.00x)"),
                                              (0.5, "2.00x faster (95% interval 2.00x-2.00x)")])
def test_the_half_precision_note_says_slower_or_faster_as_timed(shipped, fashion, monkeypatch, half_ms, verdict):
    """Both verdicts, from timings the test sets: float32 at 1 ms, fp16 at `half_ms`."""
    import core.compress.quant.quantize as qmod
    from core.measure.lane import LatencyReport, Timing

    def fake_time_models(models, *args, **kwargs):
        ms = {"float32": 1.0, "fp16": half_ms}
        return LatencyReport({k: {64: Timing.of([ms[k] / 1000] * 30)} for k in models}, "cpu")

    monkeypatch.setattr(qmod, "time_models", fake_time_models)
    model = shipped.load_model("base-lenet300")
    _, report = quantize(model, QuantConfig(mode="fp16"), calibration_batches(fashion.train, 1))
    assert report.notes == [f"fp16 runs real half-precision kernels on a GPU. On this CPU, float32 -> fp16 timed now "
                            f"on cpu, alternately: batch 64 1.00 ms -> {half_ms:.2f} ms, {verdict}."]


def test_a_partial_qat_training_dict_keeps_the_qat_defaults():
    cfg = QuantizeJobConfig(variant="x", quant={"mode": "qat"}, train={"epochs": 2})
    assert cfg.train.epochs == 2 and cfg.train.lr == 1e-3 and cfg.train.weight_decay == 0.0


@pytest.mark.parametrize("gone", ["functions", "module"])
def test_static_int8_says_plainly_when_this_torch_no_longer_ships_fx(monkeypatch, gone):
    """A torch without torch.ao.quantization FX: static int8, QAT and loading a stored static int8
    file fail with one clear sentence; the modes that need no FX still work."""
    import torch.ao.quantization as tq
    import torch.ao.quantization.quantize_fx as quantize_fx

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 3))
    calib = [torch.randn(4, 1, 8, 8)]
    assert fx_available()
    if gone == "functions":
        monkeypatch.delattr(quantize_fx, "prepare_fx")
    else:
        monkeypatch.delattr(tq, "quantize_fx")
        monkeypatch.setitem(sys.modules, "torch.ao.quantization.quantize_fx", None)
    assert not fx_available()
    says = "static int8 needs torch.ao.quantization FX, which this torch no longer ships: "
    with pytest.raises(FxUnavailable, match=re.escape(says)):
        quantize(model, QuantConfig(mode="static-int8"), calib)
    with pytest.raises(FxUnavailable, match=re.escape(says)):
        prepare_static(model, QuantConfig(mode="qat"), calib[0], qat=True)
    with pytest.raises(FxUnavailable, match=re.escape(says)):
        structure(model, QuantConfig(mode="static-int8"), calib[0])    # what loading a stored file replays
    q, _ = quantize(model, QuantConfig(mode="dynamic-int8"), calib)
    assert type(q[3]).__module__.startswith("torch.ao.nn.quantized.dynamic")

"""Export: every format of a dense, a pruned (masked), a shrunk (channel-pruned) and quantized
(static int8, dynamic int8) LeNet-5 is written, reloaded in a fresh process and matched against
the workspace variant's predictions; ONNX in onnxruntime within its tolerance, or refused with the
reason; a file that does not match is never offered; results are cached; the CLI writes them.

The variants are made with the engine's own verbs (prune, quantize) and encoders, the way the
tasks store them, but without measuring every metric on the full test split (the export only
needs the stored file, its arch and its recipe)."""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import zipfile
from pathlib import Path

import pytest
import torch

from core.io.export import pipeline as ex


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_data):
    """A workspace with a briefly trained LeNet-5 and four children: {label: Variant}."""
    from core.compress.pruning.prune import PruneConfig, prune
    from core.compress.quant.files import encode_quantized
    from core.compress.quant.quantize import QuantConfig, calibration_batches, quantize
    from core.measure.training import TrainConfig, train_
    from core.models.registry import create_model
    from core.store.variants import base_arch, encode_variant, file_metadata
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("export-ws"), seed_baselines=False)
    data = dataclasses.replace(tiny_data, train=tiny_data.train.subset(512, seed=4))
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    train_(model, data, TrainConfig(epochs=1, device="cpu"))
    model.eval()
    arch = base_arch("lenet5", data)
    train_step = {"step": "train", "model": "lenet5", "dataset": data.info.name, "train": {"epochs": 1, "seed": 0}}

    def store(m, *, name, parent, step, kind=None, weights=None, fmt=None, arch_=arch):
        if weights is None:
            weights, fmt, arch_ = encode_variant(m, name=name, dataset=data.info.name, arch=arch_)
        return ws.add_variant({}, name=name, dataset=data.info.name, arch=arch_, kind=kind, weights=weights, fmt=fmt,
                              recipe=[*(parent.recipe if parent else []), step], parent_id=parent.id if parent else None,
                              metrics={"accuracy": 0.5, "device": "cpu: test"})

    out = {"dense": store(model, name="LeNet-5 tiny", parent=None, step=train_step)}
    pcfg = PruneConfig(method="l1", amount=0.9, scope="global")
    pruned, _ = prune(model, pcfg)
    out["pruned"] = store(pruned, name="pruned 90%", parent=out["dense"], step={"step": "prune", **pcfg.to_dict()},
                          kind={"masked": True})
    ccfg = PruneConfig(method="channel", amount=0.5)
    shrunk, _ = prune(model, ccfg, input_shape=data.info.input_shape)
    out["shrunk"] = store(shrunk, name="channels 50%", parent=out["dense"], step={"step": "prune", **ccfg.to_dict()},
                          kind={"shrunk": True})
    calib = calibration_batches(data.train, 2)
    for mode in ("static-int8", "dynamic-int8", "weight-only", "fp16"):
        qcfg = QuantConfig(mode=mode, calib_batches=2, bits=4 if mode == "weight-only" else 8)
        q, _ = quantize(pruned, qcfg, calib, time_half_precision=False)
        meta = file_metadata(f"pruned {mode}", data.info.name, arch)
        weights, fmt = encode_quantized(q, qcfg, meta, float_model=pruned)
        out[mode] = store(q, name=f"pruned {mode}", parent=out["pruned"], step=qcfg.step(),
                          kind={**qcfg.kind, "masked": True},
                          weights=weights, fmt=fmt)
    return ws, out


def results(made, label):
    ws, vs = made
    return ex.export_all(ws, vs[label])


def assert_matches(r: ex.ExportResult, *, exact: bool = True):
    assert r.ok, r.message
    assert Path(r.path).is_file() and r.size_bytes == Path(r.path).stat().st_size
    if r.format != "recipe":
        assert r.n_images == ex.N_IMAGES
        assert r.agreement >= (1.0 if exact else 0.98)
        assert r.max_abs_diff <= (1e-4 if exact else 5e-2 * 30)


@pytest.mark.parametrize("label", ["pruned", "shrunk"])   # the dense baseline: tests/ui/test_export_page.py
def test_float_variants_every_format_round_trips(made, label):
    ws, vs = made
    v = vs[label]
    rs = results(made, label)
    assert list(rs) == list(ex.FORMATS)
    for fmt in ("safetensors", "recipe", "bundle"):
        assert_matches(rs[fmt])
    assert_matches(rs["onnx"])                       # float ONNX in onnxruntime: within 1e-4 here
    assert rs["onnx"].max_abs_diff < 1e-3
    if label != "pruned":      # nothing sparse or quantized in the stored file: it IS the dense safetensors
        assert v.format == "dense"
        assert rs["compact"].status == "unavailable" and "already the plain dense" in rs["compact"].message
    else:
        assert_matches(rs["compact"])
        assert rs["compact"].max_abs_diff == 0.0      # the very stored bytes, decoded the same way
        assert rs["compact"].size_bytes == ws.weights_path(v).stat().st_size

    # safetensors: plain dense tensors, readable with safetensors alone, arch and card in the header
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(rs["safetensors"].path)
    assert not any("__" in k for k in state)
    with safe_open(rs["safetensors"].path, "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["arch"]) == v.arch
    assert json.loads(meta["model_card"])["id"] == v.id
    card = json.loads(Path(rs["safetensors"].extras[0]).read_text())
    assert card["dataset"]["class_names"][0] == "T-shirt/top" and card["kind"] == {**v.kind}

    # the bundle holds what applies, the card and a README that names the checks
    with zipfile.ZipFile(rs["bundle"].path) as z:
        names = set(z.namelist())
        readme = z.read("README.txt").decode()
    assert {"model_card.json", "README.txt", Path(rs["onnx"].path).name, Path(rs["recipe"].path).name} <= names
    assert (ex.LOADER_FILE in names) == (label == "pruned")
    assert "fresh Python process" in readme and "top-1 agreement" in readme
    assert [m["format"] for m in rs["bundle"].members] == [f for f in ex.FORMATS[:-1] if rs[f].ok]


def test_pruned_compact_is_smaller_and_shrunk_is_physically_smaller(made):
    p, s = results(made, "pruned"), results(made, "shrunk")
    assert p["compact"].size_bytes < 0.2 * p["safetensors"].size_bytes   # 90% zeros: bitmask + values
    # the masked variant's dense files are full size (zeros kept); the shrunk one's are smaller
    assert s["safetensors"].size_bytes < 0.5 * p["safetensors"].size_bytes
    assert s["onnx"].size_bytes < 0.5 * p["onnx"].size_bytes


def test_onnx_runs_in_onnxruntime_with_any_batch(made):
    import onnxruntime as ort

    ws, vs = made
    r = results(made, "shrunk")["onnx"]
    sess = ort.InferenceSession(r.path, providers=["CPUExecutionProvider"])
    x, _ = ex.test_inputs(ws, vs["shrunk"], 5)
    y = sess.run(["logits"], {"input": x.numpy()})[0]
    ref = ex.reference_logits(ws, vs["shrunk"], x)
    assert y.shape == (5, 10) and float((torch.from_numpy(y) - ref).abs().max()) < 1e-3
    import onnx

    props = {p.key: p.value for p in onnx.load(r.path).metadata_props}
    assert json.loads(props["model_card"])["id"] == vs["shrunk"].id


def test_static_int8(made):
    rs = results(made, "static-int8")
    assert rs["safetensors"].status == "unavailable" and "compact int8 file" in rs["safetensors"].message
    assert_matches(rs["compact"])
    assert rs["compact"].max_abs_diff == 0.0
    # onnxruntime's int8 kernels round differently from fbgemm's: close, not identical
    assert_matches(rs["onnx"], exact=False)
    assert rs["onnx"].tolerance == ex.ONNX_INT8
    assert_matches(rs["bundle"], exact=False)
    assert [m["format"] for m in rs["bundle"].members] == ["compact", "onnx", "recipe"]


def test_dynamic_int8_onnx_is_refused_with_the_reason(made):
    ws, vs = made
    rs = results(made, "dynamic-int8")
    assert rs["onnx"].status == "unavailable"
    assert "linear_dynamic" in rs["onnx"].message and "float parent" in rs["onnx"].message
    assert vs["pruned"].id in rs["onnx"].message
    assert_matches(rs["compact"])
    assert_matches(rs["bundle"])
    with zipfile.ZipFile(rs["bundle"].path) as z:
        assert "not included: ONNX" in z.read("README.txt").decode()


@pytest.mark.parametrize("label", ["weight-only", "fp16"])
def test_simulated_and_half_precision_round_trip(made, label):
    """weight-only k-bit (kind simulated): the float model computes with the dequantized weights,
    so every format matches exactly; fp16: the half tensors as they are, computed in fp16."""
    from safetensors import safe_open

    rs = results(made, label)
    for fmt in ("safetensors", "compact", "recipe"):
        assert_matches(rs[fmt])
    for fmt in ("onnx", "bundle"):      # onnxruntime's fp16 kernels are not PyTorch's
        assert_matches(rs[fmt], exact=label == "weight-only")
    assert rs["compact"].size_bytes < 0.6 * rs["safetensors"].size_bytes
    with safe_open(rs["safetensors"].path, "pt") as f:
        assert f.metadata()["compute_dtype"] == ("float16" if label == "fp16" else "float32")


def test_a_variant_whose_dataset_is_not_here_is_checked_on_random_inputs(made):
    from core.models.registry import create_model

    ws, _ = made
    arch = {"name": "lenet5", "kwargs": {"num_classes": 10, "in_channels": 3, "image_size": 32}, "edits": {}}
    v = ws.add_variant(create_model("lenet5", in_channels=3, image_size=32), name="cifar-shaped", dataset="cifar10",
                       arch=arch, recipe=[{"step": "train", "model": "lenet5"}], metrics={})
    x, labels = ex.test_inputs(ws, v, 4)
    if labels is not None:
        pytest.skip("CIFAR-10 is on this machine: its test images are used")
    assert x.shape == (4, 3, 32, 32)
    r = ex.export(ws, v, "safetensors")
    assert_matches(r)
    assert "random inputs (its dataset is not on this machine)" in r.message
    # a deleted variant's exports go with the next export of any variant
    ws.delete_variant(v.id)
    assert ex.drop_orphans(ws) == [v.id] and not ex.cache_dir(ws, v.id, "safetensors").exists()


def test_compact_loader_is_what_the_check_ran(made, tmp_path):
    """The fresh-process check imported load_compact.py itself; here it loads the saved copy too."""
    import importlib.util

    ws, vs = made
    r = results(made, "static-int8")["compact"]
    written = ex.save_to(r, tmp_path)
    assert sorted(p.name for p in written) == sorted([r.filename, ex.LOADER_FILE])
    spec = importlib.util.spec_from_file_location("load_compact_test", tmp_path / ex.LOADER_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, _ = ex.test_inputs(ws, vs["static-int8"], 16)
    with torch.no_grad():
        assert torch.equal(mod.load(tmp_path / r.filename)(x), ex.reference_logits(ws, vs["static-int8"], x))


def test_recipe_is_the_variants_and_replayable(made):
    ws, vs = made
    r = results(made, "static-int8")["recipe"]
    doc = json.loads(Path(r.path).read_text())
    assert doc["recipe"] == vs["static-int8"].recipe and doc["root"]["id"] == vs["dense"].id
    assert [s["step"] for s in doc["recipe"]] == ["train", "prune", "quantize"]


def test_second_visit_is_cached(made, monkeypatch):
    ws, vs = made
    first = results(made, "pruned")

    def no_process(*a, **k):
        raise AssertionError("a cached export started a process")

    monkeypatch.setattr(ex, "_run_fresh", no_process)
    again = ex.export_all(ws, vs["pruned"])
    assert {f: r.to_dict() for f, r in again.items()} == {f: r.to_dict() for f, r in first.items()}


def test_model_card_is_json_safe(made):
    from core.io.model_card import model_card

    ws, vs = made
    card = model_card(ws, vs["static-int8"])
    text = json.dumps(card, allow_nan=False)
    assert json.loads(text) == card
    assert card["parent_id"] == vs["pruned"].id and card["kind"]["quantized"] and card["kind"]["masked"]
    assert card["dataset"]["image_size"] == 28 and card["dataset"]["mean"] and "normalise" in card["dataset"][
        "preprocessing"]
    assert card["libraries"]["torch"] == importlib.metadata.version("torch")      # the installed distribution
    assert card["libraries"]["torch"].startswith(torch.__version__.split("+")[0])
    assert card["metrics"]["device"] == "cpu: test" and card["created_at"].endswith("+00:00")
    assert card["latency"]["runtimes"]["torch"]["batches"]["1"]["status"] == "not measured"


def test_model_card_says_latency_per_runtime_with_intervals(made):
    """Measured figures with their 95% intervals, device per runtime, the ONNX Runtime model and the
    verdict naming the runtime; a figure that did not settle is null and "not measurable" with why."""
    from core.io.model_card import model_card

    ws, vs = made
    nan = float("nan")
    v = dataclasses.replace(vs["static-int8"], metrics={
        "accuracy": 0.5, "device": "cpu: test, 1 thread",
        "latency_ms_b1": 0.4, "latency_ms_b1_ci": [0.39, 0.42], "reference_latency_ms_b1": 0.41,
        "latency_ms_b1_vs_reference_ci": [0.98, 1.06], "latency_ms_b64": nan, "latency_ms_b64_ci": None,
        "reference_latency_ms_b64": None,
        "latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores (batch 64)",
        "ort_device": "cpu: test, 1 thread", "ort_model": "int8 QDQ (static, ONNX Runtime quantize_static)",
        "ort_latency_ms_b1": 0.1, "ort_latency_ms_b1_ci": [0.09, 0.11], "reference_ort_latency_ms_b1": 0.2,
        "ort_latency_ms_b1_vs_reference_ci": [1.9, 2.1], "ort_latency_ms_b64": 2.0, "ort_latency_ms_b64_ci": [1.9, 2.1],
        "reference_ort_latency_ms_b64": 3.2, "ort_latency_ms_b64_vs_reference_ci": [1.5, 1.7],
        "ort_latency_unmeasured": "", "ort_unavailable": ""})
    card = model_card(ws, v)
    assert json.loads(json.dumps(card, allow_nan=False)) == card
    assert card["metrics"]["latency_ms_b64"] is None
    lat = card["latency"]
    torch_, ort = lat["runtimes"]["torch"], lat["runtimes"]["onnxruntime"]
    assert torch_["runtime"] == "PyTorch eager" and torch_["device"] == "cpu: test, 1 thread"
    b1 = torch_["batches"]["1"]
    assert (b1["status"], b1["median_ms"], b1["ci_ms"], b1["vs_parent_ci"]) == ("measured", 0.4, [0.39, 0.42], [0.98, 1.06])
    assert b1["text"] == "0.400 ms (95% interval 0.390-0.420 ms), the same speed as its parent (95% interval 0.98x-1.06x)"
    b64 = torch_["batches"]["64"]
    assert b64["status"] == "not measurable" and b64["median_ms"] is None and b64["ci_ms"] is None
    assert b64["reason"] == "other processes are using 1.8 of 2 cores (batch 64)"
    assert b64["text"].startswith("not measurable now: other processes")
    assert ort["model"].startswith("int8 QDQ") and ort["device"] == "cpu: test, 1 thread" and not ort["unavailable"]
    assert ort["batches"]["64"]["vs_parent"] == pytest.approx(1.6) and ort["batches"]["64"]["vs_parent_ci"] == [1.5, 1.7]
    assert "1.60x faster than its parent (95% interval 1.50x-1.70x)" in ort["batches"]["64"]["text"]
    assert lat["verdict"].startswith("Not measurable now in PyTorch eager, 1.60x faster in ONNX Runtime")
    assert "masked" in lat["verdict"]

    gone = model_card(ws, dataclasses.replace(v, metrics={**v.metrics, "ort_unavailable": "onnxruntime is not installed"}))
    assert gone["latency"]["runtimes"]["onnxruntime"]["batches"]["1"]["text"] == (
        "no ONNX Runtime figure: onnxruntime is not installed")
    assert "ONNX Runtime" not in gone["latency"]["verdict"]          # stale ONNX Runtime figures say nothing


def test_cli_export(made, tmp_path, capsys):
    from core.cli.main import main

    ws, vs = made
    results(made, "pruned")    # checked already: the CLI copies the cached, checked files
    assert main(["--workspace", str(ws.root), "--json", "export", vs["pruned"].id, "--format", "safetensors",
                 "--out", str(tmp_path / "m.safetensors")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "ok" and out["agreement"] == 1.0
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "model_card.json").is_file()
    assert main(["--workspace", str(ws.root), "export", vs["pruned"].id, "--format", "bundle", "--out",
                 str(tmp_path)]) == 0
    assert (tmp_path / results(made, "pruned")["bundle"].filename).is_file()
    capsys.readouterr()
    # bad input: one line, exit 2
    assert main(["--workspace", str(ws.root), "export", vs["dense"].id, "--format", "compact", "--out",
                 str(tmp_path)]) == 2
    assert "compact is not available" in capsys.readouterr().err
    assert main(["--workspace", str(ws.root), "export", vs["dense"].id, "--format", "onnx", "--out",
                 str(tmp_path / "nope" / "x.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--workspace", str(ws.root), "export", vs["dense"].id, "--format", "tflite", "--out",
                 str(tmp_path)]) == 2


def test_a_file_that_does_not_match_is_never_offered(made, monkeypatch):
    from safetensors.torch import save_file

    ws, vs = made
    real = ex.WRITERS["safetensors"]

    def corrupt(ws_, v, out):
        files = real(ws_, v, out)
        state = ex.dense_state(ws_, v)[0]
        state = {k: t * 1.5 if k == "fc2.bias" else t for k, t in state.items()}
        from safetensors import safe_open
        with safe_open(str(out), "pt") as f:
            meta = f.metadata()
        save_file(state, str(out), metadata=meta)
        return files

    monkeypatch.setitem(ex.WRITERS, "safetensors", corrupt)
    r = ex.export(ws, vs["shrunk"], "safetensors", force=True)
    assert r.status == "failed" and r.path is None and "reload check failed: max abs diff" in r.message
    assert ex.cached_result(ws, vs["shrunk"], "safetensors").status == "failed"
    with pytest.raises(ValueError, match="not available"):
        ex.save_to(r, ws.root)

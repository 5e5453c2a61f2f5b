"""Decisions the pages used to take each on their own, now made once in the engine and asked by
every page: is a variant float, which jobs are a variant's, do two timings compare and how is a
speed said, what a name made from free text is, what a preview costs to keep and how often it is
computed, the one softmax inference path, the distillation pairs."""
from __future__ import annotations

import math
import threading
import time

import pytest
import torch
import torch.nn as nn

from core.base.cache import MemoryBoundedCache, tensor_bytes
from core.base.paths import slug
from core.base.ratios import (
    SAME_SPEED_RATIO,
    latency_ratio,
    runtime_verdict,
    speed_change,
    speed_words,
    timings_differ,
)
from core.store.workspace import Variant, Workspace


def variant(kind: dict | None = None, **metrics) -> Variant:
    return Variant(id="v1", name="v", parent_id=None, dataset="fashion-mnist", arch={"name": "lenet5"}, recipe=[],
                   metrics=metrics, kind=kind or {}, weights_file="v1/weights.safetensors", format="dense")


# ---------------------------------------------------------------- Variant.is_float

@pytest.mark.parametrize(("kind", "is_float"), [
    ({}, True), ({"masked": True}, True), ({"shrunk": True, "masked": True}, True),
    ({"quantized": True}, False), ({"simulated": True}, False), ({"masked": True, "quantized": True}, False),
    ({"quantized": False, "simulated": False}, True)])
def test_a_variant_is_float_unless_quantized_or_simulated(kind, is_float):
    from core.base import kinds

    assert variant(kind).is_float is is_float and kinds.is_float(kind) is is_float


def test_no_page_or_engine_module_asks_the_kind_flags_again():
    """The question has one answer: nobody re-derives it from the two flags."""
    from core.base.paths import REPO_ROOT

    copies = []
    for folder in ("core", "ui", "pages"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text()
            if 'kind.get("quantized") or' in text and 'kind.get("simulated")' in text:
                copies.append(str(path.relative_to(REPO_ROOT)))
    assert copies == ["core/base/kinds.py"], copies


# ---------------------------------------------------------------- jobs of kind K for variant V

def test_jobs_of_a_kind_for_a_variant_is_one_query(workspace):
    jobs = workspace.jobs
    a = jobs.create("quantize", {"variant": "v1", "quant": {"mode": "fp16"}})
    time.sleep(0.01)
    b = jobs.create("quantize", {"variant": "v1"})
    jobs.create("quantize", {"variant": "v2"})
    jobs.create("prune_recover", {"variant": "v1"})
    t = jobs.create("transfer", {"source": "v1", "dataset": "digits"})
    made = jobs.create("transfer", {"source": "resnet18", "dataset": "digits"})
    jobs.update(made.id, variant_id="v1")
    assert [j.id for j in jobs.for_variant("quantize", "v1")] == [b.id, a.id]          # newest first
    assert [j.id for j in jobs.for_variant("quantize", "v1", limit=1)] == [b.id]
    assert len(jobs.for_variant("quantize", ["v1", "v2"])) == 3 and jobs.for_variant("quantize", []) == []
    assert jobs.for_variant("quantize", "v3") == [] and jobs.for_variant("measure", "v1") == []
    assert [j.id for j in jobs.for_variant("transfer", "v1", key="source")] == [t.id]
    assert {j.id for j in jobs.for_variant("transfer", "v1", key="source", made=True)} == {t.id, made.id}
    with pytest.raises(ValueError, match="not a config key that names a variant"):
        jobs.for_variant("quantize", "v1", key="quant') OR 1=1 --")


# ---------------------------------------------------------------- change detection belongs to the store

def test_the_change_token_moves_with_any_commit_from_any_connection(workspace):
    token = workspace.change_token()
    assert token is not None and workspace.change_token() == token and not workspace.changed_since(token)
    other = Workspace(workspace.root, seed_baselines=False)         # as another process would
    other.jobs.create("train", {"model": "lenet5"})
    assert workspace.changed_since(token)
    moved = workspace.change_token()
    assert moved != token and workspace.change_token() == moved
    workspace.jobs.list()                                             # reading commits nothing
    assert not workspace.changed_since(moved)


# ---------------------------------------------------------------- one speed wording, one threshold

def test_speed_words_have_one_threshold_either_way():
    assert SAME_SPEED_RATIO == pytest.approx(1.1)
    assert speed_words(2.0) == "2.00x faster" and speed_words(0.5) == "2.00x slower"
    assert speed_words(1.1) == "1.10x faster" and speed_words(1 / 1.1) == "1.10x slower"
    assert speed_words(1.09) == "same speed" and speed_words(1 / 1.09) == "same speed" and speed_words(1.0) == "same speed"
    assert speed_change(10.0, 5.0) == "2.00x faster" and speed_change(10.0, 10.5) == "same speed"
    assert speed_change(None, 5.0) is None and speed_change(10.0, 0.0) is None and speed_change(math.nan, 1.0) is None


@pytest.mark.parametrize("ratio", [0.5, 0.95, 1.0, 1.05, 1.099, 1.1, 1.5, 3.0])
def test_the_quantized_no_speedup_verdict_and_the_words_agree(ratio):
    """A quantized child timed under 1.1x faster than its parent is 'no real speed-up' and never
    'faster' in words; at 1.1x or more it is faster and gets no verdict."""
    from core.compress.quant.quantize import NO_SPEEDUP_TEXT, speed_verdict

    verdict = speed_verdict({"latency_ms_b64": 10.0, "reference_latency_ms_b64": 10.0 * ratio})
    words = speed_words(ratio)
    assert (verdict == NO_SPEEDUP_TEXT) == (not words.endswith("faster"))


def test_the_lessons_and_the_pages_share_the_wording():
    import core.lessons.common as lessons_common
    import ui.widgets as widgets

    assert not hasattr(lessons_common, "speed_text")
    assert getattr(widgets, "speed_words", speed_words) is speed_words       # the pages' words are the engine's


# ---------------------------------------------------------------- when two latencies compare

def test_paired_timings_compare_whatever_the_load_separate_ones_only_on_one_idle_device():
    child = {"latency_ms_b64": 5.0, "reference_latency_ms_b64": 10.0, "teacher_latency_ms_b64": 20.0,
             "device": "cpu: x", "latency_busy": True}
    parent = {"latency_ms_b64": 12.0, "device": "cpu: x"}
    assert latency_ratio(child, parent, batch=64, paired="reference").value == pytest.approx(2.0)
    r = latency_ratio(child, parent, batch=64, paired="teacher")
    assert r.value == pytest.approx(4.0) and "with its teacher" in r.basis
    busy = latency_ratio(child, parent, batch=64)              # separate runs, one under load: withheld
    assert not busy.shown and "this one timed while other work was running" in busy.basis
    idle = latency_ratio({**child, "latency_busy": False}, parent, batch=64)
    assert idle.value == pytest.approx(12.0 / 5.0) and "separate runs on the same device" in idle.basis
    elsewhere = latency_ratio({**child, "latency_busy": False}, {**parent, "device": "cuda: H100"}, batch=64)
    assert not elsewhere.shown and elsewhere.basis.startswith("not compared: measured on different devices")


def test_the_speed_verdict_names_each_runtime_and_reads_only_paired_settled_ratios():
    dev = "cpu: AMD EPYC, AVX512 kernels, 1 thread"
    m = {"device": dev, "ort_device": dev,
         "latency_ms_b64": 10.0, "reference_latency_ms_b64": 10.5, "latency_ms_b64_vs_reference_ci": [1.0, 1.1],
         "ort_latency_ms_b64": 2.0, "reference_ort_latency_ms_b64": 3.2, "ort_latency_ms_b64_vs_reference_ci": [1.5, 1.7]}
    assert runtime_verdict(m) == "No real speed-up in PyTorch eager, 1.60x faster in ONNX Runtime"
    r = latency_ratio(m, {}, batch=64, paired="reference", runtime="onnxruntime")
    assert r.value == pytest.approx(1.6) and r.interval_words() == "95% interval 1.50x-1.70x"
    withheld = {**m, "latency_ms_b64": math.nan, "reference_latency_ms_b64": None,
                "latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores (batch 64)"}
    assert runtime_verdict(withheld) == "Not measurable now in PyTorch eager, 1.60x faster in ONNX Runtime"
    assert "no runtime here skips them" in runtime_verdict(m, masked=True)
    # separate runs on one device compare, with the widest interval the two allow
    a = {"device": dev, "latency_ms_b1": 1.0, "latency_ms_b1_ci": [0.95, 1.05]}
    b = {"device": dev, "latency_ms_b1": 2.0, "latency_ms_b1_ci": [1.9, 2.1]}
    sep = latency_ratio(a, b, batch=1)
    assert sep.value == pytest.approx(2.0) and sep.low == pytest.approx(1.9 / 1.05) and "separate runs" in sep.basis
    assert runtime_verdict({}) == ""


def test_timings_differ_names_who_was_where():
    t, d, s = {"device": "cpu"}, {"device": "cpu"}, {"device": "cuda", "latency_other_jobs": 1}
    assert timings_differ({"teacher": t, "distilled": d}) == ""
    why = timings_differ({"teacher": t, "distilled": d, "scratch": s})
    assert why == ("measured on different devices (teacher and distilled on cpu; scratch on cuda), and scratch timed "
                   "while other work was running")


def test_the_distillation_comparison_uses_the_one_rule():
    from core.tasks.distill import compare_distillation

    def v(vid, acc, **m):
        return Variant(id=vid, name=vid, parent_id=None, dataset="d", arch={}, recipe=[], kind={}, weights_file="",
                       format="dense", metrics={"accuracy": acc, "latency_ms_b64": 1.0, "device": "cpu", **m})

    ok = compare_distillation(v("t", 0.9), v("d", 0.85), v("s", 0.8))
    assert ok["latency_comparable"] and ok["latency_why"] == "" and ok["gap_closed"] == pytest.approx(0.5)
    busy = compare_distillation(v("t", 0.9), v("d", 0.85, latency_busy=True), v("s", 0.8))
    assert not busy["latency_comparable"] and busy["latency_why"] == "distilled timed while other work was running"


# ---------------------------------------------------------------- one slug

def test_one_slug_for_dataset_names_and_file_names():
    from core.data import uploaded
    from core.io.export.formats import base_name

    assert uploaded.slug is slug                                   # the CLI's name for a zip is the page's
    assert slug("My Cats & Dogs") == "my-cats-dogs" and slug("!!!") == "dataset" and slug("") == "dataset"
    assert slug("a" * 50) == "a" * 40 and slug("--x__") == "x"
    assert uploaded.NAME_RE.match(slug("Ünïcode Cats v2.0 (final)"))
    assert slug("LeNet-5 v1.2 / best", "model", keep_case=True) == "LeNet-5-v1.2-best"
    assert slug("...", "model", keep_case=True) == "model"
    assert base_name(variant()) == "v-v1"


# ---------------------------------------------------------------- the preview cache

def test_tensor_bytes_counts_quantized_weights_packed_outside_the_parameters():
    float_linear = nn.Linear(100, 100)
    q = torch.ao.quantization.quantize_dynamic(nn.Sequential(float_linear), {nn.Linear}, dtype=torch.qint8)
    assert list(q.parameters()) == []                             # nothing for parameters() to see
    assert tensor_bytes(q) >= 100 * 100                            # one byte per int8 weight


def test_the_preview_cache_is_bounded_by_memory_and_keeps_the_recently_used():
    cache = MemoryBoundedCache(max_bytes=10_000)
    for i in range(3):
        cache.get_or_compute(i, lambda: torch.zeros(1000))      # 4,000 bytes each
    assert len(cache) == 2 and 0 not in cache and cache.total_bytes == 8000
    cache.get(1)
    cache.get_or_compute(3, lambda: torch.zeros(1000))
    assert 1 in cache and 2 not in cache and cache.total_bytes <= 10_000
    cache.clear()
    assert len(cache) == 0 and cache.total_bytes == 0


def test_the_preview_cache_computes_a_key_once_however_many_ask_at_once():
    cache = MemoryBoundedCache(max_bytes=1_000_000)
    n = 8
    asked, release, calls = threading.Barrier(n + 1), threading.Event(), []

    def compute():
        calls.append(1)
        assert release.wait(10)                                  # every other thread is asking meanwhile
        return torch.ones(3)

    out = [None] * n

    def ask(i):
        asked.wait(10)
        out[i] = cache.get_or_compute("same", compute)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    asked.wait(10)
    deadline = time.time() + 10
    while not calls and time.time() < deadline:                  # the first one is computing...
        time.sleep(0.001)
    time.sleep(0.05)                                              # ...and the others are waiting on it
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and all(o is out[0] for o in out)


def test_the_preview_cache_holds_one_slot_per_computation():
    cache = MemoryBoundedCache(max_bytes=1_000_000)
    slots = threading.BoundedSemaphore(2)
    pair = threading.Barrier(2, timeout=10)       # two computations meet inside: both slots are used
    running, most, guard = [0], [0], threading.Lock()

    def compute(k):
        def run():
            with guard:
                running[0] += 1
                most[0] = max(most[0], running[0])
            pair.wait()
            time.sleep(0.02)                       # a third one, were it let in, would be counted now
            with guard:
                running[0] -= 1
            return torch.zeros(k + 1)
        return run

    threads = [threading.Thread(target=cache.get_or_compute, args=(k, compute(k)), kwargs={"slots": slots})
               for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 2 and len(cache) == 6


def test_a_failed_computation_is_not_kept_and_the_next_asker_computes_again():
    cache = MemoryBoundedCache(max_bytes=1_000)

    def boom():
        raise RuntimeError("cannot trace")

    with pytest.raises(RuntimeError, match="cannot trace"):
        cache.get_or_compute("k", boom)
    assert "k" not in cache and cache.get_or_compute("k", lambda: torch.zeros(2)).shape == (2,)


# ---------------------------------------------------------------- one is_quantized_module, one softmax path

def test_one_is_quantized_module():
    import core.compress.quant.quantize as quantize
    from core.base.kinds import is_quantized_module

    assert not hasattr(quantize, "_is_quantized_module") and quantize.is_quantized_module is is_quantized_module


def test_class_probabilities_never_switch_a_shared_model():
    from core.measure.metrics import class_probabilities

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.9)).train()
    x = torch.randn(5, 1, 2, 2)
    p = class_probabilities(model, x)
    assert model.training and all(m.training for m in model.modules())     # the caller's model as it was
    assert p.shape == (5, 3) and not p.requires_grad
    assert torch.allclose(p.sum(1), torch.ones(5))
    assert torch.equal(p, class_probabilities(model, x))                  # eval mode: dropout off, repeatable
    expected = torch.softmax(model.eval()(x), dim=1)
    assert torch.allclose(p, expected, atol=1e-6)


# ---------------------------------------------------------------- distillation: the default student and the pairs

def test_the_default_student_is_the_declared_one():
    from core.models.registry import DEFAULT_STUDENT, default_student

    assert default_student("lenet5") == "lenet5-small"
    assert default_student("no-such-arch") == DEFAULT_STUDENT and default_student(None) == DEFAULT_STUDENT


def test_a_distillation_and_its_ablation_are_paired(workspace):
    from core.tasks.distill import DistillJobConfig, experiments, twin_config

    cfg = DistillJobConfig(teacher="t", student="lenet5-small", subset=100, name="mine")
    twin = twin_config(cfg.to_dict())
    assert twin.ablation and twin.name == "mine (scratch)" and twin_config(twin.to_dict(), ablation=False) == cfg
    first = workspace.jobs.create("distill", cfg.to_dict())
    workspace.jobs.update(first.id, state="failed")
    time.sleep(0.01)
    again = workspace.jobs.create("distill", cfg.to_dict())
    time.sleep(0.01)
    abl = workspace.jobs.create("distill", twin.to_dict())
    other = workspace.jobs.create("distill", DistillJobConfig(teacher="t", student="lenet5-small", subset=200).to_dict())
    pairs = experiments(workspace.jobs.list())
    assert [len(e.jobs) for e in pairs] == [1, 3]                           # newest pair first
    assert pairs[0].distill.id == other.id and pairs[0].ablation is None
    mine = pairs[1]
    assert mine.distill.id == again.id and mine.ablation.id == abl.id      # a failed run does not stand for its side
    assert mine.newest.id == abl.id

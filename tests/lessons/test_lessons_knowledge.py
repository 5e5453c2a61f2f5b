"""Lessons 5-7 (dark knowledge, recovery, the full pipeline): their experiments on the shipped
LeNet-5, with default and moved controls; their recordings; their lesson files and check questions."""
from __future__ import annotations

import dataclasses
import json
import math
import re

import pytest
import torch

from core.base.paths import REPO_ROOT
from core.compress.pruning.masks import prunable_layers
from core.compress.quant.files import model_from_bytes
from core.data.datasets import cached_dataset
from core.lessons import exp_knowledge as ek
from core.lessons import exp_pipeline as ep
from core.lessons import exp_recovery as er
from core.lessons.common import finetune_epochs, lesson_val, load_recording, weights_digest
from core.lessons.content import check_answer, default_params, get_lesson
from core.lessons.experiments import run_experiment
from core.lessons.registry import ExperimentResult
from core.measure.metrics import accuracy
from core.models.registry import list_models

REPO = REPO_ROOT
MY_LESSONS = {"dark-knowledge": "teacher_temperature", "recovery": "recovery_curve", "full-pipeline": "pipeline_stages"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    from core.store.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("lessons-knowledge") / "ws", seed_baselines=True)


def source(rel: str) -> str:
    return (REPO / rel).read_text()


def assert_widget_keys(state: dict, page_sources: list[str], prefix: str) -> None:
    """Every key of a "try it in the workbench" state is a real widget key of the page: the page's
    prefix constant is defined, and the key's rest is used as `key=<prefix constant> + "<rest>"`."""
    src = "\n".join(source(p) for p in page_sources)
    assert re.search(rf'^\w+ = "{re.escape(prefix)}"', src, re.M), f"no constant {prefix!r} in {page_sources}"
    for key in state:
        assert key.startswith(prefix), key
        rest = key[len(prefix):]
        assert re.search(rf'key=\w+ \+ "{re.escape(rest)}"', src), f"{key!r} is not a widget key of {page_sources}"


def assert_result(r: ExperimentResult) -> None:
    assert isinstance(r, ExperimentResult)
    assert r.figures and r.metrics and r.notes
    for fig in r.figures:
        json.loads(fig.to_json())          # every figure serialises (what st.plotly_chart sends)
    assert r.recorded and any("**Recorded**" in n for n in r.notes)
    assert r.workbench and r.workbench["page"] and r.workbench["variant"]


# ---------------------------------------------------------------- lesson files

@pytest.mark.parametrize("lesson_id", list(MY_LESSONS))
def test_lesson_file_names_its_experiment_and_every_choice_has_feedback(lesson_id):
    lesson = get_lesson(lesson_id)
    assert lesson.experiment == MY_LESSONS[lesson_id]
    assert set(lesson.sections) == {"idea", "experiment", "see", "why"}
    choices = lesson.check.choices
    assert 3 <= len(choices) <= 4 and sum(c.correct for c in choices) == 1
    for i, c in enumerate(choices):
        correct, feedback = check_answer(lesson, i)
        assert correct is c.correct and feedback == c.feedback and len(feedback) > 40


def test_lesson_workbench_pages_match_the_experiments(ws):
    for lesson_id in MY_LESSONS:
        lesson = get_lesson(lesson_id)
        r = run_experiment(lesson.experiment, ws, default_params(lesson))
        assert r.workbench["page"] == lesson.workbench_page


# ---------------------------------------------------------------- lesson 5: dark knowledge

def test_softened_probabilities_sum_to_one_and_flatten_as_t_grows():
    logits = torch.tensor([8.0, 3.0, 1.0, -2.0, 0.5])
    ps = [ek.softened(logits, t) for t in (1.0, 2.0, 4.0, 10.0, 20.0)]
    for p in ps:
        assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
        assert int(p.argmax()) == 0                     # the order never changes
    entropies = [ek.entropy_bits(p) for p in ps]
    assert entropies == sorted(entropies) and entropies[0] < entropies[-1] < math.log2(5)
    assert [float(p.max()) for p in ps] == sorted((float(p.max()) for p in ps), reverse=True)


def test_teacher_temperature_default_image(ws):
    lesson = get_lesson("dark-knowledge")
    r = run_experiment("teacher_temperature", ws, default_params(lesson))
    assert_result(r)
    bars = r.figures[0].data
    names = cached_dataset("fashion-mnist").info.class_names
    assert [t.name for t in bars] == ["T = 1 (plain softmax)", "T = 4"]
    for trace in bars:
        assert sum(trace.x) == pytest.approx(1.0, abs=1e-9) and list(trace.y) == list(names)
    shirt = names.index("Shirt")
    assert max(range(10), key=lambda i: bars[1].x[i]) == shirt        # the first Shirt the teacher gets right
    assert bars[1].x[shirt] < bars[0].x[shirt]                          # softer at T = 4
    metrics = {m.label: m for m in r.metrics}
    assert metrics["Top class"].value.startswith("Shirt ")
    assert "vs T = 1" in metrics["Entropy"].delta


def test_teacher_temperature_flattens_on_a_real_image(ws):
    entropy, outside = [], []
    for t in (1.0, 4.0, 20.0):
        r = run_experiment("teacher_temperature", ws, {"temperature": t, "image": "Sandal"})
        p = r.figures[0].data[1].x
        assert sum(p) == pytest.approx(1.0, abs=1e-9)
        entropy.append(float(next(m for m in r.metrics if m.label == "Entropy").value.split()[0]))
        outside.append(1 - max(p))
        assert r.workbench["state"]["distill-temperature"] == t
    assert entropy[0] < entropy[1] < entropy[2] <= math.log2(10)
    assert outside[0] < 0.01 < outside[1] < outside[2]
    # at T = 1 there is nothing to compare with
    r1 = run_experiment("teacher_temperature", ws, {"temperature": 1.0, "image": "Sandal"})
    assert next(m for m in r1.metrics if m.label == "Entropy").delta is None


def test_teacher_temperature_refuses_bad_controls(ws):
    with pytest.raises(ValueError, match="temperature must be a number from 1 to 20"):
        run_experiment("teacher_temperature", ws, {"temperature": 0.5, "image": "Shirt"})
    with pytest.raises(ValueError, match="image must be one of"):
        run_experiment("teacher_temperature", ws, {"temperature": 4.0, "image": "Trousers"})


def test_dark_knowledge_workbench_opens_the_distill_form(ws):
    r = run_experiment("teacher_temperature", ws, {"temperature": 7.5, "image": "Coat"})
    state = r.workbench["state"]
    assert_widget_keys(state, ["ui/training_forms.py"], "distill-")
    assert state["distill-teacher"] == r.workbench["variant"] == "base-lenet5"
    assert state["distill-temperature"] == 7.5
    assert state["distill-student-model"] in [s.name for s in list_models()]
    assert state["distill-student-source"] == "model"


def test_dark_knowledge_recording_matches_the_bench():
    rec = load_recording(ek.DISTILL_RECORDING)
    assert rec is not None
    for key in ("recorded_at", "device", "command", "bench_date", "bench_command"):
        assert rec[key], key
    assert "--only dark-knowledge.json" in rec["command"]
    bench = json.loads((REPO / "bench" / "results" / "distill_bench.json").read_text())
    for key in ("teacher_accuracy", "scratch_mean", "distilled_mean", "gap_closed_mean", "settings"):
        assert rec[key] == bench[key], f"{key}: re-record with {rec['command']}"
    assert rec["bench_command"].startswith(".venv/bin/python bench/distill_bench.py")
    assert len(json.dumps(rec)) < 5_000


# ---------------------------------------------------------------- lesson 6: recovery

def test_recovery_curve_default(ws):
    r = run_experiment("recovery_curve", ws, default_params(get_lesson("recovery")))
    assert_result(r)
    rec = load_recording(er.RECOVERY_RECORDING)
    row = next(x for x in rec["rows"] if x["amount"] == 0.9)
    # the live point right after pruning is the recorded epoch 0: same weights, pruning and images
    live = next(t for t in r.figures[0].data if t.name.startswith("live"))
    assert live.y[0] == pytest.approx(row["masks"]["points"][0]["val_accuracy"], abs=1e-9)
    assert [row["epoch"] for row in r.table] == list(range(rec["epochs"] + 1))
    state = r.workbench["state"]
    assert_widget_keys(state, ["ui/forms.py"], "prune-")
    assert state["prune-amount"] == 0.9 and state["prune-method"] == "l1" and state["prune-scope"] == "global"


def test_recovery_live_epoch_keeps_zeros_zero(ws):
    v = ws.get_variant("base-lenet5")
    before, names, _ = er._pruned(str(ws.root), v.id, v.created_at, v.dataset, 0.95)
    zeros = {n: m.weight.detach() == 0 for n, m in prunable_layers(before) if n in names}
    live = er.live_epoch(ws, v, 0.95)
    assert live["zeros_kept"] and live["sparsity"] == live["sparsity_before"] == pytest.approx(0.95, abs=1e-4)
    assert live["accuracy"] > live["accuracy_before"] + 0.05      # at 95% one epoch on 2,000 images wins a lot back
    # the cached pruned model was not touched by the live run
    for n, m in prunable_layers(before):
        if n in names:
            assert torch.equal(m.weight.detach() == 0, zeros[n])
    r = run_experiment("recovery_curve", ws, {"amount": 0.95, "live_epoch": True})
    tile = next(m for m in r.metrics if m.label.startswith("Live epoch"))
    assert "unchanged" in tile.delta and tile.value == f"{live['accuracy']:.2%}"    # a fixed seed: the same again
    assert list(r.figures[0].data[-1].y) == [live["accuracy_before"], live["accuracy"]]
    # without the button: only the live point right after pruning (the page keeps a pressed run itself)
    again = run_experiment("recovery_curve", ws, {"amount": 0.95, "live_epoch": False})
    assert not any(m.label.startswith("Live epoch") for m in again.metrics)
    assert len(again.figures[0].data[-1].y) == 1


def test_finetuning_without_masks_regrows_the_zeros(ws, fashion):
    """What the recording shows, checked live on a small subset: masks keep the sparsity, no masks lose it."""
    v = ws.get_variant("base-lenet5")
    pruned, names, _ = er._pruned(str(ws.root), v.id, v.created_at, v.dataset, 0.9)
    data = dataclasses.replace(fashion, train=fashion.train.subset(640, seed=3), val=fashion.val.subset(200, seed=3))
    kept, kept_acc = finetune_epochs(pruned, names, data, 1, masks=True)
    free, _ = finetune_epochs(pruned, names, data, 1, masks=False)
    assert kept_acc == pytest.approx(accuracy(kept, data.val), abs=1e-9)     # measured with the masks made permanent
    assert er.pruned_sparsity(kept, names) == pytest.approx(0.9, abs=1e-4)
    assert er.pruned_sparsity(free, names) < 0.5
    assert er.pruned_sparsity(pruned, names) == pytest.approx(0.9, abs=1e-4)   # the input is never changed


def test_recovery_recording_shows_masks_keep_sparsity_and_no_masks_lose_it(ws):
    rec = load_recording(er.RECOVERY_RECORDING)
    assert rec is not None
    for key in ("recorded_at", "device", "command"):
        assert rec[key], key
    assert "--only recovery.json" in rec["command"]
    v = ws.get_variant("base-lenet5")
    assert rec["variant"] == v.id and rec["weights_sha256"] == weights_digest(ws, v)
    assert [row["amount"] for row in rec["rows"]] == list(er.RECOVERY_AMOUNTS)
    for row in rec["rows"]:
        masked, free = row["masks"]["points"], row["no_masks"]["points"]
        assert len(masked) == len(free) == rec["epochs"] + 1
        assert all(p["sparsity"] == pytest.approx(row["amount"], abs=1e-3) for p in masked)
        assert free[-1]["sparsity"] < 0.5 * row["amount"]              # the zeros grew back
        if row["amount"] >= 0.85:     # where pruning costs accuracy, fine-tuning wins some back
            assert masked[-1]["val_accuracy"] > masked[0]["val_accuracy"]
    assert len(json.dumps(rec)) < 20_000


def test_recovery_on_other_weights_shows_the_live_part_and_says_why(ws, tmp_path):
    """A workspace whose base-lenet5 was retrained: the recorded curves are not passed off as its own."""
    from core.models.registry import create_model
    from core.store.workspace import Workspace

    shipped = ws.get_variant("base-lenet5")
    other = Workspace(tmp_path / "other", seed_baselines=False)
    torch.manual_seed(1)
    other.add_variant(create_model("lenet5", **shipped.arch["kwargs"]), name="retrained", dataset=shipped.dataset,
                      arch=shipped.arch, recipe=shipped.recipe, metrics={}, variant_id="base-lenet5")
    r = run_experiment("recovery_curve", other, {"amount": 0.9, "live_epoch": False})
    assert not r.recorded and r.table is None
    assert any("other weights" in n and "record_lessons.py --only recovery.json" in n for n in r.notes)
    assert [m.label for m in r.metrics] == ["Right after pruning (live)"]
    assert all("recorded" not in (t.name or "") for fig in r.figures for t in fig.data)
    assert r.workbench["state"]["prune-amount"] == 0.9


def test_recovery_refuses_bad_controls(ws):
    with pytest.raises(ValueError, match="amount must be a number from 0.5 to 0.95"):
        run_experiment("recovery_curve", ws, {"amount": 0.99, "live_epoch": False})
    with pytest.raises(ValueError, match="live_epoch must be true or false"):
        run_experiment("recovery_curve", ws, {"amount": 0.9, "live_epoch": "yes"})


def test_lessons_need_the_shipped_baseline(tmp_path):
    from core.store.workspace import Workspace

    empty = Workspace(tmp_path / "empty", seed_baselines=False)
    for name, params in (("teacher_temperature", {"temperature": 4.0, "image": "Shirt"}),
                         ("recovery_curve", {"amount": 0.9}), ("pipeline_stages", {"fc_bits": 5})):
        with pytest.raises(ValueError, match="restore-baselines"):
            run_experiment(name, empty, params)


# ---------------------------------------------------------------- lesson 7: the full pipeline

def live_key(ws):
    return ep.live_key(ws, ws.get_variant("base-lenet5"), ep.bench_result()[0])


def test_pipeline_live_run_prunes_and_shares_like_the_recorded_bench(ws):
    bench, _ = ep.bench_result()
    key, conv = live_key(ws)
    assert dict(key[4]) == bench["layer_amounts"] and conv == bench.get("bits_conv", 8)
    # a result that does not name them: Han et al.'s kept fractions and 8-bit conv codebooks
    key, conv = ep.live_key(ws, ws.get_variant("base-lenet5"), {})
    assert {n: round(1 - a, 2) for n, a in key[4]} == ep.PAPER["kept_per_layer"] and conv == 8


def test_pipeline_stages_default(ws):
    r = run_experiment("pipeline_stages", ws, default_params(get_lesson("full-pipeline")))
    assert_result(r)
    assert [row["stage"] for row in r.table] == list(ep.STAGES)
    assert "39x" in r.table[-1]["paper (LeNet-5, MNIST)"] and "44 KB" in r.table[-1]["paper (LeNet-5, MNIST)"]
    bench, _ = ep.bench_result()
    assert [t["bytes"] for t in bench["stages"]] == list(r.figures[0].data[0].y)
    assert r.figures[0].layout.yaxis.type == "log"
    assert any(bench["date"] in n and "bench/deep_compression.py" in n for n in r.notes)
    state = r.workbench["state"]
    assert_widget_keys(state, ["ui/forms.py"], "share-")
    assert state["share-bits-fc"] == 5 and state["share-bits-conv"] == live_key(ws)[1]


def test_fewer_fc_bits_give_fewer_bytes(ws):
    v = ws.get_variant("base-lenet5")
    key, conv = live_key(ws)
    shared = {b: ep._shared(*key, conv, b) for b in range(2, 9)}
    packed = [shared[b]["packed_bytes"] for b in range(2, 9)]
    huffman = [shared[b]["huffman_bytes"] for b in range(2, 9)]
    assert packed == sorted(packed) and len(set(packed)) == 7
    assert huffman == sorted(huffman) and all(h < p for h, p in zip(huffman, packed))
    _, pruned_bytes, pruned_acc, untuned_acc, _ = ep._pruned(*key)
    assert packed[-1] < pruned_bytes                       # sharing even at 8 bits beats 32-bit values
    assert untuned_acc < pruned_acc                        # the short epoch recovered accuracy
    assert shared[8]["accuracy"] == pytest.approx(pruned_acc, abs=0.01)
    assert shared[2]["accuracy"] < shared[8]["accuracy"]
    for b in (2, 5):
        assert shared[b]["values_per_layer"]["fc1"] <= 2 ** b
    # the bytes are a real file: it decodes to the model that was measured
    model = model_from_bytes(v.arch, shared[5]["file"])
    assert accuracy(model, lesson_val(v.dataset)) == pytest.approx(shared[5]["accuracy"], abs=1e-9)
    r2 = run_experiment("pipeline_stages", ws, {"fc_bits": 2})
    r8 = run_experiment("pipeline_stages", ws, {"fc_bits": 8})
    assert r2.figures[0].data[1].y[-1] < r8.figures[0].data[1].y[-1]
    assert r2.workbench["state"]["share-bits-fc"] == 2


def test_pipeline_pruned_model_has_the_bench_sparsity(ws):
    key, _ = live_key(ws)
    model = ep._pruned(*key)[0]
    for n, m in prunable_layers(model):
        zeros = float((m.weight == 0).float().mean())
        assert zeros == pytest.approx(dict(key[4])[n], abs=0.005), n


def test_pipeline_refuses_bad_bits(ws):
    for bad in (1, 9, 4.5, "5", True):
        with pytest.raises(ValueError, match="fc_bits must be a whole number from 2 to 8"):
            run_experiment("pipeline_stages", ws, {"fc_bits": bad})


def test_share_variant_prefers_a_pruned_and_retrained_descendant(tmp_path):
    from core.store.workspace import Workspace

    w = Workspace(tmp_path / "ws", seed_baselines=True)
    v = w.get_variant("base-lenet5")
    assert ep.share_variant(w, v).id == v.id       # nothing pruned yet: the baseline (the page says prune first)
    pruned = ep._pruned(*live_key(w)[0])[0]
    step = {"step": "prune_recover", "steps": 1}
    child = w.add_variant(pruned, name="pruned", dataset=v.dataset, arch=v.arch, recipe=[*v.recipe, step],
                          metrics={}, kind={"masked": True}, parent_id=v.id)
    assert child.format == "sparse"
    assert ep.share_variant(w, v).id == child.id
    r = run_experiment("pipeline_stages", w, {"fc_bits": 4})
    assert r.workbench["variant"] == child.id


def test_small_probabilities_read_as_percentages():
    assert ek.pct(0.5) == "50.0%" and ek.pct(0.0) == "0.0%"
    assert ek.pct(3e-5) == "0.003%" and ek.pct(1e-9) == "< 0.0001%"


def test_bench_commands_rerun_what_was_recorded():
    base = ".venv/bin/python bench/deep_compression.py"
    assert ep.bench_command({"quick": True, "steps": 2, "finetune_epochs": 1, "subset": 3000}) == base + " --quick"
    assert ep.bench_command({"quick": False, "steps": 5, "finetune_epochs": 2, "subset": None}) == base + " --steps 5"
    assert ep.bench_command({"command": base + " --bits-fc 5"}) == base + " --bits-fc 5"
    settings = {"seeds": [0, 1], "epochs": 2, "subset": 20000, "temperature": 4.0, "alpha": 0.9, "lr": 0.005,
                "student": "lenet5-small"}
    assert ek.bench_command(settings) == (".venv/bin/python bench/distill_bench.py --seeds 0 1 --epochs 2 --subset 20000 "
                                          "--temperature 4 --alpha 0.9 --lr 0.005 --student lenet5-small")

"""The Learn section's engine: the lesson-file parser (every refusal names the file and the
problem), the experiments of lessons 1-4 on the shipped baselines (their answers follow the
controls), the workbench settings (real widget keys of the real pages) and every lesson's check."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from core.base.paths import REPO_ROOT
from core.lessons.content import (
    LESSONS_DIR,
    Check,
    Choice,
    Control,
    Lesson,
    check_answer,
    default_params,
    get_lesson,
    load_lessons,
    parse_lesson,
)

ROOT = REPO_ROOT
GOOD = textwrap.dedent('''\
    +++
    id = "demo-lesson"
    title = "Demo"
    order = 1
    summary = "A lesson for the tests."
    experiment = "prune_one_layer"
    workbench_page = "prune"
    [[controls]]
    key = "layer"
    label = "Layer"
    type = "select"
    options = ["conv1", "fc1"]
    default = "fc1"
    help = "One line."
    [[controls]]
    key = "amount"
    label = "Amount"
    type = "slider"
    min = 0.0
    max = 0.99
    step = 0.01
    default = 0.5
    [[controls]]
    key = "rerun"
    label = "Re-run"
    type = "button"
    [check]
    question = "Which?"
    [[check.choices]]
    text = "This one"
    correct = true
    feedback = "Yes."
    [[check.choices]]
    text = "That one"
    correct = false
    feedback = "No."
    +++

    ## Idea

    The idea, with $w$.

    ## Experiment

    Move it.

    ## What you should see

    Change.

    ## Why it happens

    Because.
    ''')


def write(folder: Path, text: str, name: str = "01-demo-lesson.md") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(text)
    return p


# ---------------------------------------------------------------- the parser

def test_good_file_parses_every_field(tmp_path):
    lesson = parse_lesson(write(tmp_path, GOOD))
    assert isinstance(lesson, Lesson)
    assert (lesson.id, lesson.title, lesson.order, lesson.experiment, lesson.workbench_page) == (
        "demo-lesson", "Demo", 1, "prune_one_layer", "prune")
    assert lesson.controls[0] == Control("layer", "Layer", "select", "fc1", options=("conv1", "fc1"), help="One line.")
    assert lesson.controls[1] == Control("amount", "Amount", "slider", 0.5, min=0.0, max=0.99, step=0.01)
    assert lesson.controls[2] == Control("rerun", "Re-run", "button", False)
    assert lesson.check == Check("Which?", (Choice("This one", True, "Yes."), Choice("That one", False, "No.")))
    assert lesson.sections == {"idea": "The idea, with $w$.", "experiment": "Move it.", "see": "Change.",
                               "why": "Because."}
    assert default_params(lesson) == {"layer": "fc1", "amount": 0.5, "rerun": False}
    assert check_answer(lesson, 0) == (True, "Yes.")
    assert check_answer(lesson, 1) == (False, "No.")
    hash(lesson)   # usable as a cache key


def test_load_lessons_sorts_by_order_and_skips_other_files(tmp_path):
    write(tmp_path, GOOD.replace('order = 1', 'order = 5'), "05-demo-lesson.md")
    write(tmp_path, GOOD.replace('"demo-lesson"', '"second"'), "01-second.md")
    (tmp_path / "README.md").write_text("# How to write a lesson\n")
    (tmp_path / "glossary.md").write_text("# Glossary\n")
    assert [x.id for x in load_lessons(tmp_path)] == ["second", "demo-lesson"]
    assert get_lesson("second", tmp_path).order == 1
    with pytest.raises(ValueError, match="no lesson with id 'nope'; known: second, demo-lesson"):
        get_lesson("nope", tmp_path)


def test_repeated_id_or_order_is_refused(tmp_path):
    write(tmp_path, GOOD, "01-demo-lesson.md")
    write(tmp_path, GOOD.replace("order = 1", "order = 2"), "02-demo-lesson.md")
    with pytest.raises(ValueError, match=r"01-demo-lesson.md and 02-demo-lesson.md have the same id"):
        load_lessons(tmp_path)
    (tmp_path / "02-demo-lesson.md").unlink()
    write(tmp_path, GOOD.replace('"demo-lesson"', '"other"'), "01-other.md")
    with pytest.raises(ValueError, match="have the same order 1"):
        load_lessons(tmp_path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_lessons(tmp_path / "nope")


def _sub(old: str, new: str, count: int = 1) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, count)


BAD = {
    "no front matter": (GOOD.split("+++", 2)[2], "must start with TOML front matter"),
    "bad toml": (_sub('title = "Demo"', 'title = "Demo'), "front matter is not valid TOML"),
    "unknown field": (_sub('order = 1', 'order = 1\nauthor = "me"'), "unknown front-matter field"),
    "missing title": (_sub('title = "Demo"\n', ''), "missing the field 'title'"),
    "empty summary": (_sub('summary = "A lesson for the tests."', 'summary = " "'), "'summary' must be a non-empty"),
    "bad id": (_sub('id = "demo-lesson"', 'id = "Demo Lesson"'), "must be lowercase words"),
    "id unlike the file name": (_sub('id = "demo-lesson"', 'id = "other-lesson"'), "the file name says id"),
    "order not int": (_sub('order = 1', 'order = "1"'), "'order' must be a positive integer"),
    "no controls": (re.sub(r"\[\[controls\]\].*?(?=\[check\])", "", GOOD, flags=re.S), "at least one"),
    "unknown control type": (_sub('type = "select"', 'type = "knob"'), "unknown control type 'knob'"),
    "unknown control field": (_sub('help = "One line."', 'hint = "One line."'), "unknown field"),
    "select default not an option": (_sub('default = "fc1"', 'default = "fc9"'), "not among the options"),
    "select without options": (_sub('options = ["conv1", "fc1"]\n', ''), "needs a non-empty list 'options'"),
    "bad control key": (_sub('key = "amount"', 'key = "the amount"'), "key 'the amount' must be lowercase"),
    "mixed options": (_sub('options = ["conv1", "fc1"]', 'options = ["conv1", 2]'), "all be strings or all be numbers"),
    "table option": (_sub('options = ["conv1", "fc1"]', 'options = ["conv1", {a = 1}]'), "all be strings"),
    "repeated option": (_sub('options = ["conv1", "fc1"]', 'options = ["fc1", "fc1"]'), "options repeat"),
    "slider default outside": (_sub('default = 0.5', 'default = 1.5'), r"outside the range \[0.0, 0.99\]"),
    "slider min above max": (_sub('min = 0.0', 'min = 1.0'), "must be below max"),
    "slider bad step": (_sub('step = 0.01', 'step = 0.0'), "step must be positive"),
    "slider missing max": (_sub('max = 0.99\n', ''), "missing the field 'max'"),
    "slider mixed int and float": (_sub('min = 0.0', 'min = 0'), "all be integers or all be decimals"),
    "button default true": (_sub('type = "button"', 'type = "button"\ndefault = true'), "button's default must be"),
    "repeated control key": (_sub('key = "amount"', 'key = "layer"'), "control keys repeat"),
    "no check": (GOOD[:GOOD.index("[check]")] + "+++" + GOOD.split("+++", 2)[2], r"the \[check\] table is missing"),
    "one choice": (re.sub(r'\[\[check.choices\]\]\ntext = "That one".*?feedback = "No."\n', "", GOOD, flags=re.S),
                   "at least two"),
    "no correct choice": (_sub('correct = true', 'correct = false'), "no correct choice"),
    "choice without feedback": (_sub('feedback = "No."\n', ''), "missing the field 'feedback'"),
    "correct not bool": (_sub('correct = true', 'correct = "yes"'), "'correct' must be true or false"),
    "missing section": (_sub("## Why it happens\n\nBecause.\n", ""), "missing section.*## Why it happens"),
    "unknown section": (_sub("## Idea", "## Ideas"), "unknown section.*## Ideas"),
    "sections out of order": (GOOD.replace("## Idea\n\nThe idea, with $w$.\n\n", "").replace(
        "## Why it happens", "## Idea\n\nThe idea.\n\n## Why it happens"), "out of order"),
    "repeated section": (_sub("## Why it happens\n\nBecause.\n", "## Why it happens\n\nBecause.\n\n## Idea\n\nx\n"),
                         "repeated section"),
    "empty section": (_sub("Move it.", ""), "section '## Experiment' is empty"),
    "text before the first section": (_sub("## Idea", "Hello\n\n## Idea"), "text before '## Idea'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_file_is_refused_naming_file_and_problem(tmp_path, case):
    text, problem = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=r"lesson file 01-demo-lesson\.md: .*" + problem):
        parse_lesson(path)
    with pytest.raises(ValueError, match="01-demo-lesson.md"):
        load_lessons(tmp_path)


def test_check_answer_refuses_a_bad_index(tmp_path):
    lesson = parse_lesson(write(tmp_path, GOOD))
    for bad in (-1, 2, True, "0"):
        with pytest.raises(ValueError, match="choice index must be 0..1"):
            check_answer(lesson, bad)


# ---------------------------------------------------------------- the shipped lesson files

SHIPPED = load_lessons()


def test_shipped_lessons_parse_and_name_registered_experiments():
    from core.lessons import experiments  # noqa: F401  (registers the built-in experiments)
    from core.lessons.registry import EXPERIMENTS

    assert LESSONS_DIR == ROOT / "lessons"
    assert SHIPPED and SHIPPED[0].id == "which-weights-go"
    for lesson in SHIPPED:
        assert lesson.experiment in EXPERIMENTS, f"{lesson.path.name}: unknown experiment {lesson.experiment!r}"
        assert (ROOT / "pages" / f"{lesson.workbench_page}.py").is_file(), lesson.workbench_page


@pytest.mark.parametrize("lesson", SHIPPED, ids=[x.id for x in SHIPPED])
def test_every_check_answer_gives_its_own_feedback(lesson):
    results = [check_answer(lesson, i) for i in range(len(lesson.check.choices))]
    assert sum(ok for ok, _ in results) >= 1
    for (ok, feedback), choice in zip(results, lesson.check.choices, strict=True):
        assert ok is choice.correct and feedback == choice.feedback and len(feedback) > 20
    assert len({f for _, f in results}) == len(results), "each choice explains itself"


# ---------------------------------------------------------------- the experiments of lessons 1-4

@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace seeded with the shipped, trained baselines (the lessons run on base-lenet5)."""
    from core.store.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("lessons") / "ws")


def run(ws, name: str, **params):
    from core.lessons.experiments import run_experiment
    from core.lessons.registry import ExperimentResult

    r = run_experiment(name, ws, params)
    assert isinstance(r, ExperimentResult)
    assert r.figures and all(hasattr(f, "to_plotly_json") for f in r.figures), "plotly figures"
    assert r.metrics and r.notes and r.workbench
    return r


def metric(r, label_start: str) -> str:
    return next(m.value for m in r.metrics if m.label.startswith(label_start))


def pct(text: str) -> float:
    return float(text.rstrip("%").replace(",", "")) / 100


def trace_names(fig) -> list[str]:
    return [t.name or "" for t in fig.data]


def test_prune_one_layer_follows_layer_and_amount(ws):
    light = run(ws, "prune_one_layer", layer="fc1", amount=0.5)
    heavy = run(ws, "prune_one_layer", layer="fc1", amount=0.95)
    conv = run(ws, "prune_one_layer", layer="conv1", amount=0.95)
    assert metric(light, "Sparsity of fc1") == "50.0%" and metric(heavy, "Sparsity of fc1") == "95.0%"
    # fc1 is most of the model; conv1 (500 weights) almost none of it
    assert pct(metric(heavy, "Sparsity of the model")) > 0.85 > 0.01 > pct(metric(conv, "Sparsity of the model"))
    acc = {k: pct(metric(r, "Val. accuracy")) for k, r in (("light", light), ("heavy", heavy), ("conv", conv))}
    assert acc["light"] > acc["heavy"] > acc["conv"], acc      # conv1 is the sensitive one
    heat, hist, curve = light.figures
    assert heat.data[0].type == "heatmap" and "fc1" in heat.layout.title.text
    assert any("200,000 pruned" in n for n in trace_names(hist))            # 50% of 400,000 weights
    assert any("380,000 pruned" in n for n in trace_names(heavy.figures[1]))
    mark = next(t for t in curve.data if t.name == "your setting")
    assert mark.x[0] == pytest.approx(0.5) and mark.y[0] == pytest.approx(acc["light"])
    assert next(t for t in conv.figures[2].data if t.name == "your setting").x[0] == pytest.approx(0.95)
    assert light.recorded and any("Recorded" in n for n in light.notes)     # the curve is the shipped scan
    assert light.workbench == {"page": "prune", "variant": "base-lenet5", "state": {
        "prune-method": "l1", "prune-scope": "layer", "prune-amount": 0.0, "prune-exclude": [],
        "prune-overrides": ["fc1"], "prune-layer-fc1": 0.5}}


def test_prune_one_layer_matches_the_prune_page_config(ws):
    """The lesson's pruning is the config the Prune page builds from the workbench state."""
    from core.compress.pruning.prune import prune
    from core.lessons.common import lesson_model
    from core.lessons.exp_pruning import one_layer_config

    _, model = lesson_model(ws)
    _, report = prune(model, one_layer_config("fc2", 0.9))   # the classifier, when chosen, is pruned too
    assert {r.name for r in report.layers if r.nonzero_after < r.nonzero_before} == {"fc2"}
    assert report.layer("fc2").sparsity_after == pytest.approx(0.9)


def test_prune_one_layer_refuses_bad_params(ws):
    with pytest.raises(ValueError, match="'fc9' is not a prunable layer.*conv1, conv2, fc1, fc2"):
        run(ws, "prune_one_layer", layer="fc9", amount=0.5)
    with pytest.raises(ValueError, match=r"amount must be in \[0, 1\)"):
        run(ws, "prune_one_layer", layer="fc1", amount=1.0)


def test_curve_is_measured_live_without_a_matching_recording(ws, monkeypatch, tmp_path):
    from core.lessons import common, exp_pruning

    monkeypatch.setattr(common, "recorded_dir", lambda: tmp_path)     # nothing recorded
    monkeypatch.setattr(exp_pruning, "CURVE_AMOUNTS", (0.0, 0.5, 0.9))
    exp_pruning._layer_curve.cache_clear()
    r = run(ws, "prune_one_layer", layer="conv2", amount=0.3)
    assert not r.recorded and not any("Recorded" in n for n in r.notes)
    assert list(r.figures[2].data[0].x) == [0.0, 0.5, 0.9]
    exp_pruning._layer_curve.cache_clear()


def test_masked_vs_shrunk_measures_both_kinds(ws):
    r9 = run(ws, "masked_vs_shrunk", amount=0.9)
    r5 = run(ws, "masked_vs_shrunk", amount=0.5)
    rows = {row["model"]: row for row in r9.table}
    d, m, s = rows["dense"], rows["masked"], rows["shrunk"]
    assert (m["masked"], m["shrunk"], s["masked"], s["shrunk"]) == (True, False, False, True)
    assert m["params"] == d["params"] > s["params"]                 # masks keep every parameter
    assert m["non-zero params"] < 0.2 * d["params"]
    assert m["MACs"] == d["MACs"] > s["MACs"]                       # zeros are still multiplied
    assert m["dense file"] == d["dense file"] and m["best file"].endswith("(sparse)")
    assert all(r["latency b1 (ms)"] > 0 and r["latency b64 (ms)"] > 0 for r in rows.values())
    rows5 = {row["model"]: row for row in r5.table}
    assert rows5["masked"]["non-zero params"] > m["non-zero params"] and rows5["shrunk"]["params"] > s["params"]
    fig = r9.figures[0]
    assert [t.name for t in fig.data] == ["dense", "masked", "shrunk"]
    masked_bars = dict(zip(fig.data[1].x, fig.data[1].y, strict=True))
    assert masked_bars["MACs"] == pytest.approx(1.0) and masked_bars["file (best format)"] < 0.2
    shrunk_bars = dict(zip(fig.data[2].x, fig.data[2].y, strict=True))
    assert shrunk_bars["MACs"] < 0.2 and shrunk_bars["file (best format)"] < 0.1
    assert r9.workbench["state"] == {"prune-method": "channel", "prune-scope": "layer", "prune-amount": 0.9}
    with pytest.raises(ValueError, match="amount must be between 0 and 1"):
        run(ws, "masked_vs_shrunk", amount=1.0)


def test_sensitivity_allocation_beats_uniform_from_the_recording(ws):
    r8 = run(ws, "sensitivity_allocation", sparsity=0.8, rerun=False)
    r5 = run(ws, "sensitivity_allocation", sparsity=0.5, rerun=False)
    assert r8.recorded and "Recorded" in r8.notes[0] and "record_lessons.py" in r8.notes[0]
    assert pct(metric(r8, "Allocated")) > pct(metric(r8, "Uniform")) + 0.05     # the lesson's point, measured
    assert pct(metric(r8, "Overall sparsity")) == pytest.approx(0.8, abs=0.01)
    assert pct(metric(r5, "Overall sparsity")) == pytest.approx(0.5, abs=0.01)
    sens, amounts = r8.figures
    assert {t.name.split(" ")[0] for t in sens.data if t.name} >= {"conv1", "conv2", "fc1", "fc2"}
    alloc = dict(zip(amounts.data[1].x, amounts.data[1].y, strict=True))
    assert set(alloc) == {"conv1", "conv2", "fc1"}                   # the classifier left alone
    assert alloc["fc1"] > 0.8 > alloc["conv1"]
    st = r8.workbench["state"]
    assert st["prune-exclude"] == ["fc2"] and st["prune-overrides"] == ["conv1", "conv2", "fc1"]
    assert st["prune-layer-fc1"] == pytest.approx(alloc["fc1"]) and st["prune-amount"] == 0.8


def test_sensitivity_rerun_measures_live_and_says_how_long(ws, monkeypatch):
    from core.lessons import exp_pruning

    monkeypatch.setattr(exp_pruning, "SCAN_AMOUNTS", (0.5, 0.9))     # a short live scan for the test
    exp_pruning._live_scan.cache_clear()
    r = run(ws, "sensitivity_allocation", sparsity=0.8, rerun=True)
    assert not r.recorded
    assert re.search(r"\*\*Live\*\*: the scan was run now.*it took \d+\.\d s", r.notes[0])
    assert list(r.figures[0].data[0].x) == [0.0, 0.5, 0.9]
    again = run(ws, "sensitivity_allocation", sparsity=0.7, rerun=True)
    assert "run earlier in this process" in again.notes[0]
    exp_pruning._live_scan.cache_clear()


def test_quantize_weights_follows_layer_and_bits(ws):
    r8 = run(ws, "quantize_weights", layer="fc1", bits=8)
    r2 = run(ws, "quantize_weights", layer="fc1", bits=2)
    c4 = run(ws, "quantize_weights", layer="conv1", bits=4)
    sqnr = {b: float(metric(r, "fc1 weight SQNR").split()[0]) for b, r in ((8, r8), (2, r2))}
    assert sqnr[8] > 35 and sqnr[8] - sqnr[2] > 25                  # about 6 dB per bit
    assert pct(metric(r8, "Val. accuracy")) > pct(metric(r2, "Val. accuracy")) + 0.2
    assert any("(255 values)" in n for n in trace_names(r8.figures[0]))
    assert any("(3 values)" in n for n in trace_names(r2.figures[0]))
    assert any("(15 values)" in n for n in trace_names(c4.figures[0])) and "conv1" in c4.figures[0].layout.title.text
    assert list(r8.figures[1].data[0].y) == ["conv1", "conv2", "fc1", "fc2"]      # the error of every layer
    acc_bars = r2.figures[2].data[0]
    assert list(acc_bars.x) == ["float32", "8-bit", "4-bit", "2-bit"] and acc_bars.y[1] > acc_bars.y[3]
    rows = {row["setting"]: row for row in r8.table}
    int8 = rows["static int8 (weights + activations) (recorded)"]          # the shipped recording by default
    assert int8["kind"] == "quantized" and "→" in int8["latency b1 / b64"]
    assert r8.recorded and any("**Recorded**: static int8" in n for n in r8.notes)
    assert rows["weight-only 2-bit"]["kind"] == "simulated"
    sizes = [rows[f"weight-only {b}-bit"]["file"] for b in (8, 4, 2)]
    assert len(set(sizes)) == 3                                             # fewer bits, a smaller file
    assert r2.workbench == {"page": "quantize", "variant": "base-lenet5", "state": {
        "quant-mode": "weight-only", "quant-bits": 2, "quant-symmetric": True, "quant-grid-layer": "fc1"}}
    with pytest.raises(ValueError, match="bits must be one of 8, 4, 2"):
        run(ws, "quantize_weights", layer="fc1", bits=3)
    with pytest.raises(ValueError, match="'x' is not a quantizable layer"):
        run(ws, "quantize_weights", layer="x", bits=8)


def test_int8_button_quantizes_and_times_it_here(ws):
    from core.lessons import exp_quant

    exp_quant._LIVE_INT8.clear()
    live = run(ws, "quantize_weights", layer="conv2", bits=8, int8_live=True)
    assert not live.recorded and any("**Live**: static int8 was quantized and timed" in n for n in live.notes)
    rows = {row["setting"]: row for row in live.table}
    assert rows["static int8 (weights + activations)"]["file"].endswith("KB")
    # measured once: later answers show the live numbers, not the recording
    after = run(ws, "quantize_weights", layer="fc1", bits=4, int8_live=False)
    assert not after.recorded and any("earlier in this process" in n for n in after.notes)
    exp_quant._LIVE_INT8.clear()


def test_lessons_refuse_a_workspace_without_the_baseline(tmp_path):
    from core.lessons.experiments import run_experiment
    from core.store.workspace import Workspace

    empty = Workspace(tmp_path / "empty", seed_baselines=False)
    for name, params in (("prune_one_layer", {"layer": "fc1", "amount": 0.5}), ("masked_vs_shrunk", {"amount": 0.9}),
                         ("sensitivity_allocation", {"sparsity": 0.8}), ("quantize_weights", {"bits": 8})):
        with pytest.raises(ValueError, match="needs the shipped baseline 'base-lenet5'.*restore"):
            run_experiment(name, empty, params)


# ---------------------------------------------------------------- workbench settings: the real pages' keys

def _page_sources(page: str) -> str:
    """The page script and the shared ui modules it may draw its widgets with."""
    files = [ROOT / "pages" / f"{page}.py", *sorted((ROOT / "ui").glob("*.py"))]
    return "\n".join(p.read_text() for p in files if p.is_file())


def _assert_real_widget_key(key: str, value, src: str) -> None:
    prefix, _, suffix = key.partition("-")
    const = f'"{prefix}-"'     # each page's widget keys share a prefix constant, e.g. PRUNE_KEY = "prune-"
    assert const in src, f"{key}: no widget key prefix {const} in the page's sources"
    if suffix.startswith("layer-"):            # per-layer sliders: f"{k}layer-{name}"
        assert 'layer-{name}' in src, key
        assert isinstance(value, float) and 0.0 <= value <= 0.99, (key, value)
    else:
        assert f'+ "{suffix}"' in src or f'"{key}"' in src, f"{key}: not a widget key of the page"


@pytest.mark.parametrize("lesson", SHIPPED, ids=[x.id for x in SHIPPED])
def test_workbench_settings_use_the_real_pages_widget_keys(ws, lesson):
    r = run(ws, lesson.experiment, **default_params(lesson))
    wb = r.workbench
    assert wb["page"] == lesson.workbench_page
    assert ws.get_variant(wb["variant"]).id == wb["variant"]
    src = _page_sources(wb["page"])
    assert wb["state"], "some settings to carry over"
    for key, value in wb["state"].items():
        _assert_real_widget_key(key, value, src)
    st = wb["state"]
    if "prune-amount" in st:   # the Prune page's Amount slider: 0..0.95 in steps of 0.05
        assert 0.0 <= st["prune-amount"] <= 0.95 and round(st["prune-amount"] * 20, 6) % 1 == 0
    if "quant-bits" in st:
        assert st["quant-bits"] in range(2, 9)


# ---------------------------------------------------------------- recording

def test_record_lessons_writes_labelled_json(ws, monkeypatch, tmp_path):
    import importlib.util
    import json

    from core.lessons import exp_pruning

    spec = importlib.util.spec_from_file_location("record_lessons", ROOT / "scripts" / "record_lessons.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert "sensitivity-base-lenet5.json" in script.find_recordings()
    monkeypatch.setattr(exp_pruning, "SCAN_AMOUNTS", (0.5, 0.9))
    assert script.main(["--only", "sensitivity-base-lenet5.json", "--out", str(tmp_path / "rec"),
                        "--workspace", str(ws.root)]) == 0
    rec = json.loads((tmp_path / "rec" / "sensitivity-base-lenet5.json").read_text())
    assert rec["device"].startswith("cpu") and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", rec["recorded_at"])
    assert rec["command"] == ".venv/bin/python scripts/record_lessons.py --only sensitivity-base-lenet5.json"
    assert rec["result"]["amounts"] == [0.5, 0.9] and len(rec["result"]["layers"]) == 4
    assert script.main(["--only", "nope.json", "--out", str(tmp_path / "rec")]) == 2


def test_shipped_recordings_are_small_and_labelled():
    import json

    files = sorted((LESSONS_DIR / "recorded").glob("*.json"))
    assert any(f.name == "sensitivity-base-lenet5.json" for f in files)
    for f in files:
        assert f.stat().st_size < 64_000, f"{f.name} is too big to commit"
        rec = json.loads(f.read_text())
        assert {"recorded_at", "device", "command"} <= set(rec), f.name


def test_lessons_bench_moves_every_control():
    """bench/lessons_bench.py times the defaults and each control moved alone (not timed here)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lessons_bench", ROOT / "bench" / "lessons_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for lesson in SHIPPED:
        moves = bench.moves(lesson)
        assert moves[0] == ("defaults", default_params(lesson))
        for c in lesson.controls:
            moved = {p[c.key] for label, p in moves[1:] if label.startswith(c.key + "=")}
            if c.type in ("select", "radio"):
                assert moved == set(c.options) - {c.default}, (lesson.id, c.key)
            elif c.type == "slider":
                assert {c.min, c.max} - {c.default} <= moved, (lesson.id, c.key)
                assert all(c.min <= v <= c.max for v in moved)
            else:
                assert not moved and all(p[c.key] is False for _, p in moves)   # buttons are pressed apart

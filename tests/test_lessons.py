"""The Learn section's engine: the lesson-file parser (every refusal names the file and the
problem), the experiments of lessons 1-4 on the shipped baselines (their answers follow the
controls), the workbench settings (real widget keys of the real pages) and every lesson's check."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

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

ROOT = Path(__file__).resolve().parents[1]

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

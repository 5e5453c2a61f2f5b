"""Lesson files: `lessons/NN-<id>.md` = TOML front matter between `+++` lines, then Markdown with
exactly four `## ` sections (Idea, Experiment, What you should see, Why it happens).

A teacher edits these files, not page code; so every mistake is refused here with a ValueError
that names the file and says what is wrong, before any page shows half a lesson."""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from core.base import paths

LESSONS_DIR = paths.LESSONS_DIR

CONTROL_TYPES = ("select", "radio", "slider", "button")
# "## " heading text -> key of Lesson.sections, in the order a lesson must give them
SECTIONS = {"Idea": "idea", "Experiment": "experiment", "What you should see": "see", "Why it happens": "why"}
ID_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_FRONT_RE = re.compile(r"\A\+\+\+[ \t]*\r?\n(.*?)\r?\n\+\+\+[ \t]*(?:\r?\n|\Z)", re.S)
_HEADING_RE = re.compile(r"^##[ \t]+(.+?)[ \t]*$", re.M)
KEY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
LESSON_FILE_RE = re.compile(r"^(\d+)-(.+)\.md$")     # NN-<id>.md; other files (README, glossary) are not lessons


@dataclass(frozen=True)
class Control:
    """One control of a lesson's experiment; `key` is the name the experiment reads in `params`."""

    key: str
    label: str
    type: str
    default: object
    options: tuple = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    help: str = ""


@dataclass(frozen=True)
class Choice:
    text: str
    correct: bool
    feedback: str


@dataclass(frozen=True)
class Check:
    question: str
    choices: tuple[Choice, ...]


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    order: int
    summary: str
    experiment: str
    workbench_page: str
    controls: tuple[Control, ...]
    check: Check
    sections: dict            # "idea" | "experiment" | "see" | "why" -> Markdown text
    path: Path

    def __hash__(self) -> int:  # the dict field would make the frozen default hash fail
        return hash((self.id, str(self.path)))


class _Fail:
    """Raises ValueError('<file>: <problem>') so every message names the file."""

    def __init__(self, path: Path):
        self.name = path.name

    def __call__(self, problem: str) -> ValueError:
        return ValueError(f"lesson file {self.name}: {problem}")


def _str(d: dict, key: str, fail: _Fail, where: str, *, required: bool = True, default: str = "") -> str:
    if key not in d:
        if required:
            raise fail(f"{where} is missing the field {key!r}")
        return default
    v = d[key]
    if not isinstance(v, str) or (required and not v.strip()):
        raise fail(f"{where}: {key!r} must be a non-empty string, got {v!r}")
    return v.strip()


def _number(d: dict, key: str, fail: _Fail, where: str) -> float:
    if key not in d:
        raise fail(f"{where} is missing the field {key!r} (a slider needs min, max, step and default)")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise fail(f"{where}: {key!r} must be a number, got {v!r}")
    return v


def _control(d: object, i: int, fail: _Fail) -> Control:
    if not isinstance(d, dict):
        raise fail(f"controls[{i}] must be a table ([[controls]]), got {d!r}")
    where = f"controls[{i}]"
    key = _str(d, "key", fail, where)
    if not KEY_RE.match(key):
        raise fail(f"{where}: key {key!r} must be lowercase letters, digits and '_' (it names the experiment's "
                   "parameter and the URL's)")
    where = f"control {key!r}"
    label = _str(d, "label", fail, where)
    typ = _str(d, "type", fail, where)
    if typ not in CONTROL_TYPES:
        raise fail(f"{where}: unknown control type {typ!r}; use one of {', '.join(CONTROL_TYPES)}")
    help_ = _str(d, "help", fail, where, required=False)
    known = {"key", "label", "type", "help", "default", "options", "min", "max", "step"}
    unknown = sorted(set(d) - known)
    if unknown:
        raise fail(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if typ == "button":
        # a button passes True for the run in which it was clicked, False otherwise
        if d.get("default", False) is not False:
            raise fail(f"{where}: a button's default must be false (or left out), got {d['default']!r}")
        return Control(key, label, typ, False, help=help_)
    if "default" not in d:
        raise fail(f"{where} is missing the field 'default'")
    default = d["default"]
    if typ in ("select", "radio"):
        options = d.get("options")
        if not isinstance(options, list) or not options:
            raise fail(f"{where}: a {typ} needs a non-empty list 'options'")
        if any(isinstance(o, bool) or not isinstance(o, (str, int, float)) for o in options) or \
                len({type(o) for o in options}) != 1:
            raise fail(f"{where}: options must all be strings or all be numbers, got {options!r}")
        if len(set(map(repr, options))) != len(options):
            raise fail(f"{where}: options repeat a value: {options!r}")
        if default not in options:
            raise fail(f"{where}: default {default!r} is not among the options {options!r}")
        return Control(key, label, typ, default, options=tuple(options), help=help_)
    lo, hi, step = (_number(d, k, fail, where) for k in ("min", "max", "step"))
    default = _number(d, "default", fail, where)
    if not lo < hi:
        raise fail(f"{where}: min ({lo}) must be below max ({hi})")
    if step <= 0 or step > hi - lo:
        raise fail(f"{where}: step must be positive and at most max - min, got {step}")
    if not lo <= default <= hi:
        raise fail(f"{where}: default {default} is outside the range [{lo}, {hi}]")
    if len({type(v) for v in (lo, hi, step, default)}) != 1:
        # Streamlit's slider refuses a mix of int and float values
        raise fail(f"{where}: min, max, step and default must all be integers or all be decimals "
                   f"(write 1.0, not 1), got {lo!r}, {hi!r}, {step!r}, {default!r}")
    return Control(key, label, typ, default, min=lo, max=hi, step=step, help=help_)


def _check(d: object, fail: _Fail) -> Check:
    if not isinstance(d, dict):
        raise fail("the [check] table is missing (a question with [[check.choices]])")
    question = _str(d, "question", fail, "[check]")
    raw = d.get("choices")
    if not isinstance(raw, list) or len(raw) < 2:
        raise fail("[check] needs at least two [[check.choices]]")
    choices = []
    for i, c in enumerate(raw):
        where = f"check.choices[{i}]"
        if not isinstance(c, dict):
            raise fail(f"{where} must be a table")
        if not isinstance(c.get("correct"), bool):
            raise fail(f"{where}: 'correct' must be true or false, got {c.get('correct')!r}")
        choices.append(Choice(_str(c, "text", fail, where), c["correct"], _str(c, "feedback", fail, where)))
    if not any(c.correct for c in choices):
        raise fail("[check] has no correct choice (mark one with correct = true)")
    if len({c.text for c in choices}) != len(choices):
        raise fail("[check] lists the same choice text twice")
    return Check(question, tuple(choices))


def _sections(body: str, fail: _Fail) -> dict[str, str]:
    heads = list(_HEADING_RE.finditer(body))
    names = [m.group(1) for m in heads]
    expected = list(SECTIONS)
    if names != expected:
        missing = [n for n in expected if n not in names]
        extra = [n for n in names if n not in SECTIONS]
        dup = sorted({n for n in names if names.count(n) > 1})
        parts = [f"{what} section(s): {', '.join('## ' + n for n in ns)}"
                 for what, ns in (("missing", missing), ("unknown", extra), ("repeated", dup)) if ns]
        why = "; ".join(parts) or f"sections out of order: {', '.join(names)}"
        raise fail(f"{why}; a lesson has exactly these sections, in this order: "
                   + ", ".join("## " + n for n in expected))
    if body[:heads[0].start()].strip():
        raise fail("text before '## Idea': put it inside a section")
    out = {}
    for m, nxt in zip(heads, [*heads[1:], None]):
        text = body[m.end():nxt.start() if nxt else len(body)].strip()
        if not text:
            raise fail(f"section '## {m.group(1)}' is empty")
        out[SECTIONS[m.group(1)]] = text
    return out


def parse_lesson(path: Path | str) -> Lesson:
    """Read one lesson file; ValueError naming the file and the problem when it is not valid."""
    path = Path(path)
    fail = _Fail(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise fail(f"cannot be read ({e})") from e
    m = _FRONT_RE.match(text)
    if not m:
        raise fail("must start with TOML front matter between two '+++' lines")
    try:
        meta = tomllib.loads(m.group(1))
    except tomllib.TOMLDecodeError as e:
        raise fail(f"the front matter is not valid TOML ({e})") from e
    known = {"id", "title", "order", "summary", "experiment", "workbench_page", "controls", "check"}
    unknown = sorted(set(meta) - known)
    if unknown:
        raise fail(f"unknown front-matter field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    lid = _str(meta, "id", fail, "the front matter")
    if not ID_RE.match(lid):
        raise fail(f"id {lid!r} must be lowercase words joined by '-' (it is the lesson's URL)")
    named = LESSON_FILE_RE.match(path.name)
    if named and named.group(2) != lid:
        raise fail(f"the file name says id {named.group(2)!r} but the front matter says {lid!r}: "
                   f"name the file NN-{lid}.md")
    order = meta.get("order")
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise fail(f"'order' must be a positive integer, got {order!r}")
    raw = meta.get("controls")
    if not isinstance(raw, list) or not raw:
        raise fail("a lesson needs at least one [[controls]] entry")
    controls = tuple(_control(c, i, fail) for i, c in enumerate(raw))
    keys = [c.key for c in controls]
    if len(set(keys)) != len(keys):
        raise fail(f"control keys repeat: {', '.join(keys)}")
    if sum(c.type != "button" for c in controls) > 2 or sum(c.type == "button" for c in controls) > 1:
        raise fail("a lesson has one or two controls, plus at most one button")
    return Lesson(id=lid, title=_str(meta, "title", fail, "the front matter"), order=order,
                  summary=_str(meta, "summary", fail, "the front matter"),
                  experiment=_str(meta, "experiment", fail, "the front matter"),
                  workbench_page=_str(meta, "workbench_page", fail, "the front matter"),
                  controls=controls, check=_check(meta.get("check"), fail),
                  sections=_sections(text[m.end():], fail), path=path)


def load_lessons(folder: Path | str = LESSONS_DIR) -> list[Lesson]:
    """Every lesson file (`NN-<id>.md`) of `folder`, sorted by `order`; ValueError for a bad file,
    a repeated id or a repeated order. Other files there (README.md, glossary.md) are not lessons."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"lessons folder {folder} does not exist")
    lessons = [parse_lesson(p) for p in sorted(folder.glob("*.md")) if LESSON_FILE_RE.match(p.name)]
    for attr in ("id", "order"):
        seen: dict = {}
        for lesson in lessons:
            v = getattr(lesson, attr)
            if v in seen:
                raise ValueError(f"lesson files {seen[v].name} and {lesson.path.name} have the same {attr} {v!r}")
            seen[v] = lesson.path
    return sorted(lessons, key=lambda x: x.order)


def get_lesson(lesson_id: str, folder: Path | str = LESSONS_DIR) -> Lesson:
    """The lesson with this id; ValueError naming the known ids otherwise."""
    lessons = load_lessons(folder)
    for lesson in lessons:
        if lesson.id == lesson_id:
            return lesson
    raise ValueError(f"no lesson with id {lesson_id!r}; known: {', '.join(x.id for x in lessons) or 'none'}")


def default_params(lesson: Lesson) -> dict:
    """The control values a lesson starts with (a button: False, it was not clicked)."""
    return {c.key: c.default for c in lesson.controls}


def check_answer(lesson: Lesson, index: int) -> tuple[bool, str]:
    """(correct?, feedback) for the choice at `index` of the lesson's check question."""
    choices = lesson.check.choices
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(choices):
        raise ValueError(f"lesson {lesson.id!r}: choice index must be 0..{len(choices) - 1}, got {index!r}")
    c = choices[index]
    return c.correct, c.feedback

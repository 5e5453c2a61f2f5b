"""AppTest: the Learn page. The list links every lesson; every lesson in lessons/ opens by its URL,
each of its steps is visited and each control moved once with no exception; each check question
gives the chosen answer's feedback (an error for a wrong one, a success for the right one); an
unknown id says so and shows the list; "Try it in the workbench" opens the real page."""
from __future__ import annotations

import pytest
from ui_helpers import ok, texts

from core.lessons.content import load_lessons

LESSONS = load_lessons()
STEPS = ["idea", "experiment", "see", "why", "check"]


@pytest.fixture(scope="module")
def shipped_workspace(tmp_path_factory):
    """A workspace seeded with the shipped baselines (base-lenet5, base-lenet300, ...): the lessons
    run on them, and their recordings were made on those weights."""
    from core.store.workspace import Workspace

    root = tmp_path_factory.mktemp("learn-ws")
    ws = Workspace(root)
    assert ws.get_variant("base-lenet5")
    return root


@pytest.fixture
def app_env(shipped_workspace, monkeypatch):
    """The page tests' app, bound to the shipped-baseline workspace instead of the small trained one."""
    from core.store.workspace import Workspace

    monkeypatch.setenv("WORKBENCH_HOME", str(shipped_workspace))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    return Workspace(shipped_workspace, seed_baselines=False)


def open_lesson(app, lesson_id: str, **params):
    app.query_params["lesson"] = lesson_id
    for k, v in params.items():
        app.query_params[k] = v
    app.switch_page("pages/learn.py").run()
    return ok(app)


def go_to(at, step: str):
    at.session_state["step"] = step     # what the step picker (and Back/Next) set
    return ok(at.run())


def step_widget(at):
    return at.get("button_group")[0]


def moved(c):
    """A value of control `c` other than its default."""
    if c.type in ("select", "radio"):
        return next(o for o in c.options if o != c.default)
    return c.max if c.default != c.max else c.min


def widget(at, lesson, c):
    key = f"{lesson.id}.{c.key}"
    if c.type == "button":
        return at.button(key=key)
    if c.type == "select":
        return at.selectbox(key=key)
    if c.type == "radio":
        return at.radio(key=key)
    return at.slider(key=key)


def answer(at) -> tuple:
    """What the experiment shows: its numbers and its figures."""
    return [(m.label, m.value) for m in at.metric], [c.proto.spec for c in at.get("plotly_chart")]


def errors(at) -> str:
    return texts(at.error)


def test_lesson_files_exist():
    assert LESSONS, "no lesson files in lessons/"


def test_list_page_links_every_lesson_and_its_presenter_mode(app):
    app.switch_page("pages/learn.py").run()
    ok(app)
    assert app.title[0].value == "Learn"
    links = app.get("page_link")
    labels = [link.proto.label for link in links]
    for lesson in LESSONS:
        assert f"{lesson.order}. {lesson.title}" in labels
        assert f"/learn?lesson={lesson.id}" in texts(app.caption)
        assert lesson.summary in texts(app.markdown)
    # each lesson: one normal link and one "Present" link carrying present=1
    targets = [link.proto.query_string for link in links if link.proto.label == "Present"]
    assert len(targets) == len(LESSONS)
    assert all("present=1" in t for t in targets)
    assert not app.error


def test_unknown_lesson_says_so_and_shows_the_list(app):
    open_lesson(app, "no-such-lesson")
    assert "no-such-lesson" in errors(app) and LESSONS[0].id in errors(app)
    labels = [link.proto.label for link in app.get("page_link")]
    assert f"{LESSONS[0].order}. {LESSONS[0].title}" in labels


@pytest.mark.parametrize("lesson", LESSONS, ids=[x.id for x in LESSONS])
def test_every_step_and_control_of_a_lesson(app, lesson):
    at = open_lesson(app, lesson.id)
    assert at.title[0].value == f"{lesson.order}. {lesson.title}"
    md = texts(at.markdown)
    assert lesson.sections["idea"].split("\n")[0][:40] in md
    for step in STEPS:
        go_to(at, step)
        assert step_widget(at).value == step
        assert not at.error, (step, errors(at))   # the experiment's steps too: it runs on the workspace's baseline
    go_to(at, "experiment")
    assert not at.error, errors(at)          # the experiment runs on the workspace's baseline
    # what the experiment answered is what the page shows: each figure, each number
    from ui import state

    result = list(at.session_state[state.LEARN_RESULTS_KEY].values())[-1]
    assert result.figures or result.metrics, "the experiment answered neither a figure nor a number"
    assert len(at.get("plotly_chart")) == len(result.figures)
    assert [m.label for m in at.metric] == [m.label for m in result.metrics]
    before = answer(at)
    for c in lesson.controls:
        w = widget(at, lesson, c)
        if c.type == "button":
            w.click()
        else:
            w.set_value(moved(c))
        ok(at.run())
        assert not at.error, errors(at)
    assert answer(at) != before, "moving the controls changed neither a number nor a figure"
    # Back / Next walk the steps too
    go_to(at, "idea")
    at.button(key="learn-next").click()
    ok(at.run())
    assert step_widget(at).value == "experiment"
    at.button(key="learn-back").click()
    ok(at.run())
    assert step_widget(at).value == "idea"


@pytest.mark.parametrize("lesson", LESSONS, ids=[x.id for x in LESSONS])
def test_check_question_feedback(app, lesson):
    at = go_to(open_lesson(app, lesson.id), "check")
    assert lesson.check.question in texts(at.markdown)
    assert at.button(key="learn-check").disabled            # nothing picked yet
    for i, choice in enumerate(lesson.check.choices):
        at.radio(key=f"{lesson.id}.answer").set_value(i).run()
        assert not at.success and not at.error          # nothing judged before the button
        at.button(key="learn-check").click()
        ok(at.run())
        if choice.correct:
            assert choice.feedback in texts(at.success) and not at.error
        else:
            assert choice.feedback in errors(at) and not at.success


def test_presenter_mode_styles_the_page_and_links_keep_it(app):
    at = open_lesson(app, LESSONS[0].id, present="1")
    assert any("font-size" in str(h.proto.body) for h in at.get("html"))
    links = [link.proto for link in at.get("page_link")]
    nav_links = [link for link in links if link.label.startswith(("Next:", "All lessons"))]
    assert nav_links and all("present=1" in link.query_string for link in nav_links)
    leave = next(link for link in links if link.label == "Leave presenter mode")
    assert "present" not in leave.query_string


WIDGETS = ("slider", "radio", "selectbox", "multiselect", "number_input", "checkbox", "toggle", "select_slider",
           "text_input")


def widget_value(at, key: str):
    """The value a real page's widget shows, found by its key whatever its type."""
    for kind in WIDGETS:
        try:
            return getattr(at, kind)(key=key).value
        except KeyError:
            continue
    raise AssertionError(f"no widget with key {key!r} on the page")


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b)
    return a == b


@pytest.mark.parametrize("lesson", LESSONS, ids=[x.id for x in LESSONS])
def test_try_it_in_the_workbench_opens_the_real_page_with_the_settings(app, lesson):
    from ui import nav, state

    at = go_to(open_lesson(app, lesson.id), "experiment")
    assert not at.error, errors(at)
    results = list(at.session_state[state.LEARN_RESULTS_KEY].values())
    wb = results[-1].workbench
    if not wb:
        assert not [b for b in at.button if b.key == "learn-workbench"]
        return
    at.button(key="learn-workbench").click()
    ok(at.run())
    page = next(p for p in nav.available_pages() if p.url_path == wb["page"])
    assert at.title[0].value == page.title                     # the real page ran, not the lesson
    assert at.session_state["variant"] == wb["variant"]
    assert not at.error, errors(at)
    for key, value in wb["state"].items():
        # the page's own widget shows the value (its sanitizing kept it)
        assert _same(widget_value(at, key), value), (key, widget_value(at, key), value)


def test_an_experiment_error_is_shown_and_the_lesson_still_works(app, monkeypatch):
    from core.lessons import experiments, registry  # noqa: F401  (registers the experiments first)

    lesson = LESSONS[0]

    def broken(ws, params):
        raise ValueError("this lesson needs the shipped baseline 'base-lenet5', which is not in the workspace")

    monkeypatch.setitem(registry.EXPERIMENTS, lesson.experiment, broken)
    at = go_to(open_lesson(app, lesson.id), "experiment")
    assert "The experiment could not run: this lesson needs the shipped baseline" in errors(at)
    assert at.title[0].value == f"{lesson.order}. {lesson.title}"
    assert lesson.sections["experiment"].split("\n")[0][:40] in texts(at.markdown)
    assert at.button(key="learn-next") and not at.get("plotly_chart")
    assert ok(go_to(at, "check")).button(key="learn-check")      # the rest of the lesson still works


def test_a_bad_lesson_file_is_named_on_the_page(app, monkeypatch):
    from core.lessons import content

    def bad():
        raise ValueError("lesson file 09-broken.md: the [check] table is missing")

    monkeypatch.setattr(content, "load_lessons", bad)
    app.switch_page("pages/learn.py").run()
    ok(app)
    assert "09-broken.md: the [check] table is missing" in errors(app)


def test_no_lessons_says_where_they_go(app, monkeypatch):
    from core.lessons import content

    monkeypatch.setattr(content, "load_lessons", lambda: [])
    app.switch_page("pages/learn.py").run()
    ok(app)
    assert "no lessons yet" in texts(app.info)


def test_try_it_in_the_workbench_with_a_missing_variant_says_so(app, monkeypatch):
    from core.lessons import experiments, registry  # noqa: F401  (registers the experiments first)

    lesson = LESSONS[0]

    def gone(ws, params):
        return registry.ExperimentResult(metrics=[registry.Metric("Sparsity", "50.0%")],
                                         workbench={"page": "prune", "variant": "deleted-meanwhile", "state": {}})

    monkeypatch.setitem(registry.EXPERIMENTS, lesson.experiment, gone)
    at = go_to(open_lesson(app, lesson.id), "experiment")
    at.button(key="learn-workbench").click()
    ok(at.run())
    assert "deleted-meanwhile is not in this workspace" in errors(at)
    assert at.title[0].value == f"{lesson.order}. {lesson.title}"          # still on the lesson


def test_answers_are_cached_and_a_button_run_stays_until_a_control_moves(app, monkeypatch):
    from core.lessons import experiments, registry  # noqa: F401  (registers the experiments first)

    lesson = next(x for x in LESSONS if any(c.type == "button" for c in x.controls))
    button = next(c for c in lesson.controls if c.type == "button")
    slider = next(c for c in lesson.controls if c.type != "button")
    calls = []

    def fake(ws, params):
        calls.append(dict(params))
        kind = "live" if params[button.key] else "recorded"
        return registry.ExperimentResult(metrics=[registry.Metric("Answer", f"{kind} {params[slider.key]}")],
                                         recorded=kind == "recorded")

    monkeypatch.setitem(registry.EXPERIMENTS, lesson.experiment, fake)
    at = go_to(open_lesson(app, lesson.id), "experiment")
    assert at.metric[0].value == f"recorded {slider.default}" and len(calls) == 1
    at.button(key=f"{lesson.id}.{button.key}").click()
    ok(at.run())
    assert at.metric[0].value == f"live {slider.default}" and len(calls) == 2
    go_to(at, "see")                                   # another step: the live answer, from the cache
    assert at.metric[0].value == f"live {slider.default}" and len(calls) == 2
    widget(at, lesson, slider).set_value(moved(slider))
    ok(at.run())                                       # a control moved: a new answer, not live
    assert at.metric[0].value == f"recorded {moved(slider)}" and len(calls) == 3
    widget(at, lesson, slider).set_value(slider.default)
    ok(at.run())                                       # back: the plain answer from the cache
    assert at.metric[0].value == f"recorded {slider.default}" and len(calls) == 3

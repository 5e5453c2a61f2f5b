"""Learn: guided lessons, one idea at a time, each shown live on the shipped models. Without
`?lesson=` the list; with `?lesson=<id>` that lesson (a permanent link); `&present=1` for a
projector. The lessons are files in lessons/ (see the README); this page only draws them."""
import json

import plotly.graph_objects as go
import streamlit as st

from core.lessons.content import Control, Lesson, check_answer, load_lessons
from core.lessons.experiments import run_experiment
from core.lessons.registry import ExperimentResult
from ui import nav, presenter, resources, state
from ui.widgets import table

nav.leave_legacy_mode()  # a direct link to this page right after a server start

PAGE = "pages/learn.py"
LESSON_PARAM = "lesson"
STEP_KEY = "step"          # the step picker's key and URL parameter (?step=experiment)
SHOWN_KEY = "_learn_shown"  # the lesson the step picker belongs to (a new lesson starts at its URL's step)
STEPS = {"idea": "Idea", "experiment": "Experiment", "see": "What you should see", "why": "Why it happens",
         "check": "Check"}
WORKBENCH_KEY = "learn-workbench"   # the "Try it in the workbench" button
CACHE_SIZE = 16                  # results kept per session: figures are up to a few hundred kB each


# ---------------------------------------------------------------- links

def lesson_url(lesson_id: str, present: bool = False) -> str:
    """The permanent, shareable path of a lesson (relative to the app's address)."""
    return f"/learn?{LESSON_PARAM}={lesson_id}" + ("&present=1" if present else "")


def lesson_link(lesson: Lesson, label: str | None = None, icon: str | None = None, present: bool | None = None):
    params = {LESSON_PARAM: lesson.id}
    if present is None:
        params = presenter.carry(params)
    elif present:
        params[presenter.QUERY_KEY] = "1"
    st.page_link(PAGE, label=label or lesson.title, icon=icon, query_params=params)


def list_link(label: str = "All lessons") -> None:
    st.page_link(PAGE, label=label, icon=":material/list:", query_params=presenter.carry())


# ---------------------------------------------------------------- the list

def lesson_list(lessons: list[Lesson]) -> None:
    st.markdown("Compression one idea at a time, each shown live on the shipped, trained models with the "
                "workbench's real measurements. Every lesson has five short steps: the idea, an experiment with "
                "one or two controls, what you should see, why it happens, and a one-question check.")
    presenting = presenter.is_presenter()
    if presenting:
        st.page_link(PAGE, label="Leave presenter mode", icon=":material/close_fullscreen:")
    for lesson in lessons:
        with st.container(border=True, key=f"learn-item-{lesson.id}"):
            if presenting:   # on a projector: the titles and summaries only
                lesson_link(lesson, label=f"{lesson.order}. {lesson.title}", icon=":material/play_lesson:")
                st.markdown(lesson.summary)
                continue
            c_text, c_links = st.columns([3, 1], vertical_alignment="center")
            with c_text:
                lesson_link(lesson, label=f"{lesson.order}. {lesson.title}", icon=":material/play_lesson:")
                st.markdown(lesson.summary)
                st.caption(f"Permanent link: `{lesson_url(lesson.id)}`")
            with c_links:
                lesson_link(lesson, label="Present", icon=":material/co_present:", present=True)
    if not presenter.is_presenter():
        st.caption("**Presenter mode** (`&present=1` in a lesson's address): larger type for a projector, the "
                   "sidebar collapsed and its advanced controls hidden, and a presenter remote's PageDown / PageUp "
                   "move between a lesson's steps. It stays on while you move between lessons.")


def unknown_lesson(lesson_id: str, lessons: list[Lesson]) -> None:
    st.error(f"There is no lesson called **{lesson_id}**. Pick one of the lessons below; their addresses are "
             f"`/learn?lesson=<id>` with the ids {', '.join(f'`{x.id}`' for x in lessons)}.",
             icon=":material/error:")
    lesson_list(lessons)


# ---------------------------------------------------------------- one lesson

def lesson_header(lesson: Lesson, lessons: list[Lesson]) -> None:
    i = [x.id for x in lessons].index(lesson.id)
    with st.container(horizontal=True, vertical_alignment="center", gap="medium", key="learn-header"):
        list_link()
        if i > 0:
            lesson_link(lessons[i - 1], label=f"Previous: {lessons[i - 1].title}", icon=":material/arrow_back:")
        if i + 1 < len(lessons):
            lesson_link(lessons[i + 1], label=f"Next: {lessons[i + 1].title}", icon=":material/arrow_forward:")
        if presenter.is_presenter():
            lesson_link(lesson, label="Leave presenter mode", icon=":material/close_fullscreen:", present=False)
        else:
            lesson_link(lesson, label="Presenter mode", icon=":material/co_present:", present=True)
    st.title(f"{lesson.order}. {lesson.title}")


def step_picker(lesson: Lesson) -> str:
    """The five steps as one row of buttons. The step is kept in the URL (?step=see) so a link
    reopens it; a lesson opened fresh starts at its URL's step, else at the idea."""
    names = list(STEPS)
    ss = st.session_state
    if ss.get(SHOWN_KEY) != lesson.id or ss.get(STEP_KEY) not in names:
        wanted = st.query_params.get(STEP_KEY)
        ss[STEP_KEY] = wanted if wanted in names else "idea"
        ss[SHOWN_KEY] = lesson.id
    step = st.segmented_control("Step", names, required=True, key=STEP_KEY,
                                format_func=lambda s: f"{names.index(s) + 1} · {STEPS[s]}",
                                label_visibility="collapsed") or "idea"
    if step == "idea":
        st.query_params.pop(STEP_KEY, None)
    elif st.query_params.get(STEP_KEY) != step:
        st.query_params[STEP_KEY] = step
    return step


def _go(step: str) -> None:
    st.session_state[STEP_KEY] = step


def step_buttons(step: str) -> None:
    """Back / Next under a step: the usual way through a lesson on a projector's remote or keyboard."""
    names = list(STEPS)
    i = names.index(step)
    remote = presenter.is_presenter()   # a presenter's remote sends PageUp / PageDown
    with st.container(horizontal=True, key="learn-step-buttons"):
        if i > 0:
            st.button(f"Back: {STEPS[names[i - 1]]}", key="learn-back", icon=":material/arrow_back:",
                      on_click=_go, args=(names[i - 1],), shortcut="PageUp" if remote else None)
        if i + 1 < len(names):
            st.button(f"Next: {STEPS[names[i + 1]]}", key="learn-next", icon=":material/arrow_forward:",
                      type="primary", on_click=_go, args=(names[i + 1],), shortcut="PageDown" if remote else None)


def control_key(lesson: Lesson, c: Control) -> str:
    # scoped by lesson: two lessons may both have an "amount" with other ranges; also the URL parameter
    return f"{lesson.id}.{c.key}"


def _is_int(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values if v is not None)


def _draw_control(lesson: Lesson, c: Control):
    key = control_key(lesson, c)
    if c.type == "button":
        return st.button(c.label, key=key, help=c.help or None, icon=":material/play_arrow:")
    if c.type in ("select", "radio"):
        options = list(c.options)
        index = options.index(c.default) if c.default in options else 0
        if c.type == "select":
            return st.selectbox(c.label, options, index=index, key=key, help=c.help or None, bind="query-params")
        return st.radio(c.label, options, index=index, key=key, help=c.help or None, horizontal=True,
                        bind="query-params")
    if c.type == "slider":
        if _is_int(c.min, c.max, c.step, c.default):
            return st.slider(c.label, int(c.min), int(c.max), int(c.default), int(c.step or 1), key=key,
                             help=c.help or None, bind="query-params")
        step = float(c.step or 0.01)
        decimals = max(0, len(f"{step:g}".partition(".")[2]))
        return st.slider(c.label, float(c.min), float(c.max), float(c.default), step, key=key,
                         help=c.help or None, format=f"%.{decimals}f", bind="query-params")
    raise ValueError(f"lesson {lesson.id}: control {c.key!r} has the unknown type {c.type!r}")


def controls(lesson: Lesson) -> dict:
    """The lesson's controls, drawn in one row from its file; returns {control key: value}."""
    value_controls = [c for c in lesson.controls if c.type != "button"]
    buttons = [c for c in lesson.controls if c.type == "button"]
    params = {}
    if value_controls:
        cols = st.columns(len(value_controls) + (1 if len(value_controls) == 1 else 0))
        for col, c in zip(cols, value_controls):
            with col:
                params[c.key] = _draw_control(lesson, c)
    for c in buttons:
        params[c.key] = bool(_draw_control(lesson, c))
    return params


def _cache_key(experiment: str, params: dict) -> str:
    return json.dumps([experiment, params], sort_keys=True, default=str)


def run(ws, lesson: Lesson, params: dict) -> ExperimentResult | str:
    """The experiment's result for these control values, or the reason it could not run (text).

    Results are kept per session, so reruns (moving between steps, answering the check) are
    instant. A button's run (params[button] True) is remembered too and shown again while the
    other controls stay as they were, instead of falling back to the recorded result."""
    buttons = [c.key for c in lesson.controls if c.type == "button"]
    others = {k: v for k, v in params.items() if k not in buttons}
    live = st.session_state.setdefault(state.LEARN_LIVE_KEY, {})
    last = live.get(lesson.id)
    if any(params.get(b) for b in buttons):
        live[lesson.id] = dict(params)
    elif last is not None and {k: v for k, v in last.items() if k not in buttons} == others:
        params = last
    else:
        live.pop(lesson.id, None)
    cache = st.session_state.setdefault(state.LEARN_RESULTS_KEY, {})
    key = _cache_key(lesson.experiment, params)
    if key in cache:
        cache[key] = cache.pop(key)    # most recently used last
        return cache[key]
    try:
        with st.spinner("Running the experiment…"):
            result = run_experiment(lesson.experiment, ws, params)
    except ValueError as e:
        live.pop(lesson.id, None)   # a failed button run is not repeated on every rerun
        return str(e)               # not cached: a missing variant may be restored meanwhile
    cache[key] = result
    while len(cache) > CACHE_SIZE:
        cache.pop(next(iter(cache)))
    return result


def _figure_grid(figures: list) -> None:
    for i in range(0, len(figures), 2):
        row = figures[i:i + 2]
        cols = st.columns(len(row)) if len(row) > 1 else [st.container()]
        for j, (col, fig) in enumerate(zip(cols, row)):
            if presenter.is_presenter():   # a copy: the cached figure stays as the experiment made it
                fig = go.Figure(fig).update_layout(font_size=15)
            col.plotly_chart(fig, width="stretch", key=f"learn-fig-{i + j}",
                             config={"displaylogo": False})


def show_result(result: ExperimentResult) -> None:
    """Badge (live or recorded), metric tiles, figures, table and notes of one experiment answer."""
    with st.container(horizontal=True, vertical_alignment="center", key="learn-result-badges"):
        if result.recorded:
            st.badge("Recorded result", icon=":material/history:", color="orange")
            st.caption("All or part of this answer was measured earlier and shipped with the app; the notes "
                       "below say which part, when, on what machine, and how to re-record it.")
        else:
            st.badge("Live: measured now on this machine", icon=":material/bolt:", color="green")
    if result.metrics:
        most = 3 if presenter.is_presenter() else 4      # large type: fewer tiles a row
        n = len(result.metrics)
        per_row = -(-n // -(-n // most))                   # rows as even as possible (4 -> 2+2, 5 -> 3+2)
        for i in range(0, len(result.metrics), per_row):
            row = result.metrics[i:i + per_row]
            for col, m in zip(st.columns(per_row), row):
                col.metric(m.label, m.value, m.delta, delta_color="off", delta_arrow="off",
                           help=m.help, border=True)   # a delta's sign is not good or bad by itself
    _figure_grid(result.figures)
    if result.table:
        st.dataframe(table(result.table), hide_index=True, width="stretch")
    for note in result.notes:
        st.caption(note)


# The browser keeps the scroll position across st.switch_page, so the real page would open scrolled
# as far down as the lesson was; the click scrolls to the top first. Registered once per tab.
_SCROLL_TOP_JS = """<script>
if (!window.__learnScrollTop) {
  window.__learnScrollTop = true;
  document.addEventListener("click", (e) => {
    if (!e.target.closest(".st-key-__KEY__")) return;
    for (const el of document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]'))
      el.scrollTop = 0;
    window.scrollTo(0, 0);
  }, true);
}
</script>""".replace("__KEY__", WORKBENCH_KEY)


def workbench_button(result: ExperimentResult, key: str) -> None:
    """"Try it in the workbench": the real page with the experiment's settings and variant."""
    wb = result.workbench
    if not wb:
        return
    page = nav.page_file(wb.get("page", ""))
    title = next((p.title for p in nav.available_pages() if p.url_path == wb.get("page")), wb.get("page"))
    variant = wb.get("variant")
    if page is None:
        st.caption(f"The {title} page is not in this app, so these settings cannot be opened there.")
        return
    st.html(_SCROLL_TOP_JS, unsafe_allow_javascript=True)
    if not st.button("Try it in the workbench", key=key, icon=":material/open_in_new:",
                     help=f"Open the {title} page" + (f" on {variant}" if variant else "")
                          + " with the settings of this experiment"):
        return
    if variant:
        if resources.variant(variant) is None:
            st.error(f"The variant {variant} is not in this workspace, so the {title} page cannot open it.",
                     icon=":material/error:")
            return
        state.request_active_variant(variant)   # applied before the sidebar's picker is drawn next run
    for k, v in (wb.get("state") or {}).items():
        st.session_state[k] = v
    st.switch_page(page, query_params=presenter.carry())


def experiment_panel(ws, lesson: Lesson) -> None:
    """The controls, then the experiment's answer for their values (or its error, in a box)."""
    params = controls(lesson)
    result = run(ws, lesson, params)
    if isinstance(result, str):
        st.error(f"The experiment could not run: {result}", icon=":material/error:")
        return
    show_result(result)
    workbench_button(result, key=WORKBENCH_KEY)


def check(lesson: Lesson) -> None:
    """The one-question check: pick, press, read the feedback of that choice."""
    q = lesson.check
    st.markdown(f"**{q.question}**")
    texts = [c.text for c in q.choices]
    choice = st.radio("Your answer", range(len(texts)), index=None, format_func=lambda i: texts[i],
                      key=f"{lesson.id}.answer", label_visibility="collapsed")
    if st.button("Check my answer", key="learn-check", type="primary", icon=":material/task_alt:",
                 disabled=choice is None, help=None if choice is not None else "Pick an answer first"):
        right, feedback = check_answer(lesson, choice)
        # say right or wrong in words too (not only by colour), unless the feedback already does
        if right:
            said = feedback.lower().startswith(("right", "correct", "yes"))
            st.success(feedback if said else f"**Right.** {feedback}", icon=":material/check_circle:")
        else:
            said = feedback.lower().startswith(("not quite", "wrong", "no,", "no.", "incorrect"))
            st.error(feedback if said else f"**Not quite.** {feedback}", icon=":material/cancel:")


def lesson_view(ws, lesson: Lesson, lessons: list[Lesson]) -> None:
    lesson_header(lesson, lessons)
    step = step_picker(lesson)
    if step == "idea":
        st.markdown(lesson.sections["idea"])
    elif step == "experiment":
        st.markdown(lesson.sections["experiment"])
        experiment_panel(ws, lesson)
    elif step == "see":
        with st.container(border=True, key="learn-see"):   # the expectation, set apart from the evidence
            st.markdown(lesson.sections["see"])
        # the evidence next to the words: the same controls and answer (cached, so instant)
        experiment_panel(ws, lesson)
    elif step == "why":
        st.markdown(lesson.sections["why"])
    else:
        check(lesson)
    step_buttons(step)
    if step == "check":
        i = [x.id for x in lessons].index(lesson.id)
        if i + 1 < len(lessons):
            lesson_link(lessons[i + 1], label=f"Next lesson: {lessons[i + 1].title}", icon=":material/school:")
        else:
            list_link("That was the last lesson: all lessons")


# ---------------------------------------------------------------- the page

presenter.apply_style()
try:
    lessons = load_lessons()
except ValueError as e:   # a lesson file with a mistake: say which and what, draw nothing half-parsed
    st.title("Learn")
    st.error(f"A lesson file could not be read: {e}", icon=":material/error:")
    st.stop()

if not lessons:
    st.title("Learn")
    st.info("There are no lessons yet: a lesson is a file `lessons/NN-<id>.md` (see `lessons/README.md`).",
            icon=":material/info:")
    st.stop()

wanted = st.query_params.get(LESSON_PARAM)
lesson = next((x for x in lessons if x.id == wanted), None)
if lesson is None:
    st.title("Learn")
    if wanted:
        unknown_lesson(wanted, lessons)
    else:
        lesson_list(lessons)
    st.stop()

lesson_view(resources.workspace(), lesson, lessons)

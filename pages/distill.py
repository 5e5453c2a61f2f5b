"""Distill: train a small student to imitate a trained teacher (Hinton KD) as a background job with
live curves; one click trains the same student without the teacher (the ablation); then the
teacher, the distilled student and the scratch student side by side, with the share of the
teacher-student gap distillation closed. The Sweep tab runs a grid of temperature × alpha in one
job. Figures come from core.viz.distill; the pairs and numbers from core.tasks.distill."""

import streamlit as st

from core.base.ratios import RUNTIMES, speed_words
from core.base.units import human_bytes, human_count
from core.data.datasets import get_info
from core.io.model_card import latency_figure
from core.tasks.distill import (
    BAD_END,
    compare_distillation,
    experiment_key,
    experiments,
    speed_vs_teacher,
    speed_vs_teacher_words,
    twin_config,
)
from core.viz.distill import class_delta_chart, distill_curves, has_distill_curves
from ui import forms, nav, resources, state, sweep, training_forms
from ui.job_cards import show_jobs, start_job
from ui.widgets import fmt_pct, fmt_when, table

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = training_forms.DISTILL_KEY
EXPLAINER = [
    "**Start** trains the student as a background job. Its card draws the training loss (total, soft: match the "
    "teacher, hard: the true labels) and, after each epoch, validation accuracy and **agreement** with the teacher "
    "(the share of images where both pick the same class).",
    "**Temperature T** softens both models' class scores before they are compared, so the student sees how the "
    "teacher ranks the wrong classes; **alpha** weighs that soft loss against the labels.",
    "The **ablation** trains the same student with the same budget and seed on the labels alone: only the "
    "difference between the two runs says what the teacher added.",
    "**Gap closed** = (distilled − scratch) / (teacher − scratch) test accuracy: 100% means the student caught up "
    "with the teacher, 0% that the teacher added nothing.",
    "The per-class chart shows, class by class, what distillation bought (distilled − scratch) and what the student "
    "still misses (teacher − distilled).",
]
SEED_NOTE = ("One seed each: a difference of a few tenths of a point can come from the seed alone; start both again "
             "with another seed to check it.")


def dataset_title(name: str) -> str:
    try:
        return get_info(name, resources.workspace().root).title
    except ValueError:
        return name


def pick_experiment(exps):
    """The pair this session looks at: the one it started last, else the one it chose, else the newest."""
    keys = [e.key for e in exps]
    by_key = {e.key: e for e in exps}
    last = state.last_job()
    if last and st.session_state.get(K + "seen-job") != last:
        st.session_state[K + "seen-job"] = last
        mine = next((e.key for e in exps if any(j.id == last for j in e.jobs)), None)
        if mine is not None:
            st.session_state[K + "run"] = mine
    if st.session_state.get(K + "run") not in keys:
        st.session_state.pop(K + "run", None)
    if len(exps) == 1:
        st.session_state[K + "run"] = keys[0]
        return exps[0]

    def label(k: str) -> str:
        e = by_key[k]
        head = e.distill or e.ablation
        return " · ".join([head.title, f"distillation {e.distill.state}" if e.distill else "no distillation",
                           f"ablation {e.ablation.state}" if e.ablation else "no ablation yet",
                           fmt_when(e.newest.created_at)])

    key = st.selectbox("Distillation run", keys, key=K + "run", format_func=label,
                       help="A distillation and its ablation (the same settings without the teacher) are shown "
                            "together; the newest first.")
    return by_key[key]


def job_chart(ws, job) -> None:
    """The distill job's own curves, drawn inside its card (grows while the job runs)."""
    events = resources.job_events(job.id)
    if not has_distill_curves(events):
        if not job.is_final:
            st.caption("The loss curves appear after the first 20 optimizer steps (before those, the teacher's "
                       "outputs for every training image are computed once); accuracy and agreement after each epoch.")
        return
    fig = resources.figure(("distill-curves", job.id, events[-1].get("seq"), job.is_final),
                           lambda: distill_curves(list(events), full_range=not job.is_final))
    st.plotly_chart(fig, key=f"{K}curves-{job.id}", width="stretch")
    ends = [e for e in events if e.get("kind") == "epoch_end" and "agreement" in e]
    if ends:
        e = ends[-1]
        st.caption(f"After epoch {e['epoch']} of {e['epochs']}: student accuracy {e['val_accuracy']:.2%} and "
                   f"agreement with the teacher {e['agreement']:.2%} (the share of validation images where both "
                   "pick the same class)" + (", trained without the teacher." if job.config.get("ablation") else "."))


def made_by(job):
    return resources.variant(job.variant_id) if job is not None and job.state == "done" and job.variant_id else None


def latency_text(m: dict, batch: int) -> str:
    """'0.52 ms (0.50-0.55)': a PyTorch eager median with its 95% interval, or why there is none
    (the engine's `latency_figure` decides which)."""
    fig = latency_figure(m, "torch", batch)
    if fig["status"] == "measured":
        ci = fig["ci_ms"]
        return f"{fig['median_ms']:.2f} ms " + (f"({ci[0]:.2f}-{ci[1]:.2f})" if ci else "(no interval)")
    return "not measurable now" if fig["status"] == "not measurable" else "not measured"


def ratio_text(r) -> str:
    """'3.10x faster (2.95x-3.26x)', or why there is no ratio."""
    if not r.shown:
        return "not measurable now" if r.basis.startswith("not measurable") else "not compared"
    words = speed_words(r.value)
    return words + (f" ({r.low:.2f}x-{r.high:.2f}x)" if r.low is not None else " (no interval)")


def numbers_table(rows, teacher) -> None:
    t = teacher.metrics

    def vs_teacher(v) -> str:
        a, ta = v.metrics.get("accuracy"), t.get("accuracy")
        return "–" if v.id == teacher.id or a is None or ta is None else f"{(a - ta) * 100:+.2f}"

    def speed(v, rt: str) -> str:
        return "–" if v.id == teacher.id else ratio_text(speed_vs_teacher(v.metrics, t, 64)[rt])

    st.dataframe(table([{
        "role": role, "variant": v.name, "test accuracy": v.metrics.get("accuracy"), "vs teacher (pp)": vs_teacher(v),
        "parameters": human_count(v.metrics.get("params")), "size": human_bytes(v.metrics.get("size_bytes")),
        "x smaller": (t.get("size_bytes") / v.metrics["size_bytes"]) if t.get("size_bytes")
        and v.metrics.get("size_bytes") else None,
        "latency b1": latency_text(v.metrics, 1), "latency b64": latency_text(v.metrics, 64),
        **{f"vs teacher b64, {rt.title}": speed(v, key) for key, rt in RUNTIMES.items()},
        "id": v.id,
    } for role, v in rows]), hide_index=True, width="stretch", key=K + "numbers", column_config={
        "variant": st.column_config.TextColumn(width="large"),
        "test accuracy": st.column_config.NumberColumn(format="percent", help="Full test split, measured on the "
                                                                             "stored file"),
        "vs teacher (pp)": st.column_config.TextColumn(help="Test accuracy against the teacher, in percentage points"),
        "x smaller": st.column_config.NumberColumn(format="%.1fx", help="Teacher's download size / this one's"),
        "latency b1": st.column_config.TextColumn(help="Median forward pass at batch 1 in PyTorch eager, with its 95% "
                                                       "interval, or 'not measurable now' when it did not settle"),
        "latency b64": st.column_config.TextColumn(help="Median forward pass at batch 64 in PyTorch eager, with its "
                                                        "95% interval"),
        "vs teacher b64, PyTorch eager": st.column_config.TextColumn(
            help="Teacher's batch-64 latency / the student's, timed together (alternately, in one call), with the "
                 "ratio's 95% interval"),
        **{f"vs teacher b64, {rt.title}": st.column_config.TextColumn(
            help=f"The same in {rt.title} on the CPU (the exported models)") for rt in RUNTIMES.values() if rt.prefix},
    })


def student_next_to_teacher(teacher, student) -> None:
    """The finished student's metrics beside its teacher's, as cards."""
    t, s = teacher.metrics, student.metrics
    cols = st.columns(5)
    ta, sa = t.get("accuracy"), s.get("accuracy")
    cols[0].metric("Student test accuracy", fmt_pct(sa),
                   f"{(sa - ta) * 100:+.2f} pp vs teacher" if None not in (sa, ta) else None,
                   help=f"Teacher {teacher.name}: {fmt_pct(ta)}, on the same full test split.")
    ts, ss = t.get("size_bytes"), s.get("size_bytes")
    cols[1].metric("Student download size", human_bytes(ss),
                   f"{ts / ss:.1f}x smaller" if ts and ss and ts / ss >= 1.05 else None,
                   help=f"The file you would download; the teacher's is {human_bytes(ts)}.")
    cols[2].metric("Student parameters", human_count(s.get("params")), help=f"Teacher: {human_count(t.get('params'))}.")
    cols[3].metric("Teacher agreement", fmt_pct(s.get("agreement")),
                   help="Share of validation images where student and teacher pick the same class, after the last "
                        "epoch.")
    lr = speed_vs_teacher(s, t, 64)["torch"]     # the engine says whether the two compare
    words = speed_words(lr.value) if lr.shown else None
    value = latency_text(s, 64)
    cols[4].metric("Latency, batch 64", value.split(" (")[0],
                   None if words is None else "same speed as teacher" if words == "same speed" else f"{words} than teacher",
                   delta_color="off", delta_arrow="off",
                   help=f"Median forward pass in PyTorch eager: {value}. Against the teacher: {lr.basis}"
                        + (f", {lr.interval_words()}." if lr.interval_words() else "."))
    st.caption(f":material/speed: **Speed against the teacher, batch 64.** {speed_vs_teacher_words(s, t, 64)}.")


def comparison(ws, teacher, distilled, scratch) -> None:
    """Teacher, distilled student and scratch student side by side, the gap closed and the verdict."""
    roles = {"teacher": teacher, "distilled": distilled, "scratch": scratch}
    per_class, pc_error = None, None
    with st.spinner("Measuring per-class accuracy on the test split (once per variant)…"):
        try:
            per_class = resources.distill_class_accuracies(tuple(roles.values()))
        except Exception as e:   # noqa: BLE001  (a missing dataset is one line, not a traceback)
            pc_error = f"{type(e).__name__}: {e}"
    cmp = compare_distillation(teacher, distilled, scratch, per_class=per_class)
    closed = cmp["gap_closed"]
    t, d, s = (cmp[r]["accuracy"] for r in roles)
    if closed is not None and closed > 0:
        st.success(cmp["verdict"], icon=":material/check_circle:")
    elif None in (t, d, s):
        st.info(cmp["verdict"], icon=":material/info:")
    else:
        st.warning(cmp["verdict"], icon=":material/thumb_down:")
    cols = st.columns(4)
    cols[0].metric("Gap closed", "–" if closed is None else f"{closed:.0%}",
                   help="(distilled − scratch) / (teacher − scratch) test accuracy: 100% means the student reached "
                        "the teacher, 0% that the teacher added nothing to the same student trained alone.")
    cols[1].metric("Teacher", fmt_pct(t), help=teacher.name)
    cols[2].metric("Distilled student", fmt_pct(d), f"{(d - s) * 100:+.2f} pp vs scratch" if None not in (d, s)
                   else None, help=distilled.name)
    cols[3].metric("Scratch student", fmt_pct(s), help=f"{scratch.name}: the same student, budget and seed, trained "
                                                       "on the labels alone")
    st.caption(SEED_NOTE)
    numbers_table(list(roles.items()), teacher)
    for role in ("distilled", "scratch"):
        st.caption(f":material/speed: **{role.capitalize()} student against the teacher, batch 64.** "
                   f"{cmp['speed_words'][role]}.")
    if not cmp["latency_comparable"]:   # the ratios above are paired; only the table's absolute figures are not
        st.caption(f"The three medians in the table come from separate runs: {cmp['latency_why']}. The ratios to the "
                   "teacher above do not depend on them: each says how it was obtained.")
    if not cmp.get("per_class"):
        if pc_error:
            st.caption(f"Per-class accuracies could not be measured here: {pc_error}")
        return
    try:
        names = get_info(teacher.dataset, ws.root).class_names
    except ValueError:
        names = None
    key = ("distill-classes", *[(v.id, v.created_at) for v in roles.values()])
    fig = resources.figure(key, lambda: class_delta_chart(cmp["per_class"], names, title="Per-class test accuracy: "
                                                          "what distillation bought and what is still missing"))
    st.plotly_chart(fig, key=K + "classes", width="stretch")
    rows = [r for r in cmp["per_class"] if r["distilled_minus_scratch"] is not None]
    if rows:
        best = max(rows, key=lambda r: r["distilled_minus_scratch"])
        worst = min(rows, key=lambda r: r["distilled_minus_scratch"])
        label = (lambda r: names[r["class"]]) if names else (lambda r: str(r["class"]))
        st.caption(f"Green: distilled minus scratch (above 0, the teacher helped that class); grey: teacher "
                   f"minus distilled (what the student still misses). Largest gain: {label(best)} "
                   f"({best['distilled_minus_scratch'] * 100:+.1f} pp); "
                   f"{'largest loss' if worst['distilled_minus_scratch'] < 0 else 'smallest gain'}: "
                   f"{label(worst)} ({worst['distilled_minus_scratch'] * 100:+.1f} pp).")


# ---------------------------------------------------------------- guard

ws = resources.workspace()
st.title("Distill")
st.caption("Knowledge distillation: a small **student** learns from a trained **teacher**'s softened class scores "
           "as well as from the true labels. **Start** runs it as a background job with live curves; the "
           "**ablation** trains the same student with the same budget and seed on the labels alone, so you can see "
           "what the teacher added.")
forms.explainer(EXPLAINER, ["dark-knowledge"])
variants = resources.variants()
if not variants:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page; it can then be a teacher.",
            icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------- one run | a sweep of the grid

tab_one, tab_sweep = st.tabs(["One run", "Sweep temperature × alpha"])
with tab_sweep:     # drawn first: the one-run tab below may st.stop() (no run yet)
    sweep.section(ws, "distill", state.active_variant(ws))

with tab_one:
    # ------------------------------------------------------------ widgets -> config -> Start

    st.subheader("Teacher and student")
    config = training_forms.distill_form(variants, state.active_variant(ws))
    all_pairs = experiments(resources.job_list(limit=200))
    if config is not None:
        teacher = resources.variant(config.teacher)
        student = resources.variant(config.student)
        st.caption(config.budget(teacher=teacher.name if teacher else "the teacher",
                                 images=dataset_title(teacher.dataset) if teacher else "",
                                 student_variant=student.name if student else None))
        same = next((e for e in all_pairs if e.key == experiment_key(config.to_dict())
                     and e.distill is not None and e.distill.state not in BAD_END), None)
        if same is not None:
            st.info(f"These exact settings were already started (job `{same.distill.id}`, {same.distill.state}; see "
                    "Runs). Starting again trains the same student again (same seed); change the seed for another "
                    "sample.", icon=":material/content_copy:")
    if st.button("Start distillation", type="primary", key=K + "start", icon=":material/play_arrow:",
                 disabled=config is None,
                 help="Queue a background job that distills the teacher into the student, then measures the result on "
                      "the full test split and stores it as a variant"):
        start_job(ws, "distill", config)

    # ------------------------------------------------------------ runs: a distillation and its ablation

    st.subheader("Runs")
    if not all_pairs:
        st.caption("No distillation yet: press **Start distillation** above. Its progress and curves show here and on "
                   "the Jobs page.")
        st.stop()
    pair = pick_experiment(all_pairs)
    shown = [j.id for j in (pair.distill, pair.ablation) if j is not None]

    def cards(w):
        """The pair's jobs, then any other distill job still queued or running (started anywhere)."""
        listed = resources.job_list(limit=200)     # read once per change of the job store, shared by every session
        by_id = {j.id: j for j in listed}
        mine = [by_id[jid] for jid in shown if jid in by_id]    # a job deleted meanwhile is simply not drawn
        return mine + [j for j in listed if j.kind == "distill" and not j.is_final and j.id not in shown]

    show_jobs(cards, key=K + "job", curves=False, log=False, extra=job_chart)

    # the missing half of the pair, one click away
    head = pair.distill or pair.ablation
    if head.state not in BAD_END:
        if pair.ablation is None:
            student = head.config.get("student")
            student_name = getattr(resources.variant(student), "name", student)
            if st.button("Start the ablation: the same student without the teacher", key=K + "ablation",
                         icon=":material/science:",
                         help=f"Train {student_name} with the same budget, data and seed on the true labels only "
                              "(alpha 0), so the comparison shows what the teacher added"):
                start_job(ws, "distill", twin_config(head.config))
            st.caption("The comparison with the teacher and the verdict appear when both runs are done.")
        elif pair.distill is None:
            if st.button("Start the matching distillation (with the teacher)", key=K + "with-teacher",
                         icon=":material/school:", help="The same settings as this ablation, with the teacher"):
                start_job(ws, "distill", twin_config(head.config, ablation=False))

    # ------------------------------------------------------------ results

    teacher_v = resources.variant(head.config.get("teacher", ""))
    distilled_v, scratch_v = made_by(pair.distill), made_by(pair.ablation)
    if distilled_v is not None and teacher_v is not None:
        st.subheader(f"Result: {distilled_v.name}")
        student_next_to_teacher(teacher_v, distilled_v)
    if teacher_v is not None and distilled_v is not None and scratch_v is not None:
        st.subheader("Did distillation help?")
        comparison(ws, teacher_v, distilled_v, scratch_v)
    elif distilled_v is not None and teacher_v is not None:
        numbers_table([("teacher", teacher_v), ("distilled", distilled_v)], teacher_v)
    elif teacher_v is None and head.is_final:
        st.info(f"The teacher of this run ({head.config.get('teacher')}) is no longer in the workspace: nothing to "
                "compare with.", icon=":material/info:")

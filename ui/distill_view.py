"""How the Distill page draws: the teacher/student form (returns a DistillJobConfig), the live
curves inside a distill job's card, the pairing of a distillation with its ablation (the same
student, budget and seed trained without the teacher), and the side-by-side comparison of the
teacher, the distilled student and the scratch student. Figures come from core/viz_distill; the
numbers from core.tasks.distill (compare_distillation, class_accuracies)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import streamlit as st

from core.base.units import human_bytes, human_count
from core.compress.distill.kd import DistillConfig
from core.models.registry import list_models
from core.store.jobstore import Job
from core.store.workspace import Variant
from core.tasks.distill import DistillJobConfig, compare_distillation
from core.viz.distill import class_delta_chart, distill_curves, has_distill_curves
from ui import forms, resources, state
from ui.widgets import fmt_ms, fmt_pct, speed_words, table, variant_label

K = "distill-"                 # every widget key of the page starts with it
DEFAULT_STUDENT = "lenet5-small"
DEFAULTS = DistillJobConfig(teacher="-", student=DEFAULT_STUDENT, subset=10_000,
                            distill=DistillConfig(temperature=4.0, alpha=0.9, epochs=2, lr=0.005, seed=0))
SOURCES = {"model": "A new model from the registry (untrained)", "variant": "An existing variant (pruned, shrunk, …)"}
BAD_END = ("failed", "cancelled", "interrupted")
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
LESSONS = ["dark-knowledge"]
SEED_NOTE = ("One seed each: a difference of a few tenths of a point can come from the seed alone; start both again "
             "with another seed to check it.")


def is_quantized(v: Variant) -> bool:
    return bool(v.kind.get("quantized") or v.kind.get("simulated"))


def quantized_message(v: Variant, role: str) -> str:
    parent = resources.variant(v.parent_id) if v.parent_id else None
    what = "quantized (integer kernels)" if v.kind.get("quantized") else "simulated-quantized (weight-only codes)"
    instead = (f" Use its float parent **{parent.name}** instead" if parent is not None and not is_quantized(parent)
               else " Use a float variant instead")
    after = " and quantize the distilled student afterwards." if role == "student" else "."
    return (f"**{v.name}** is {what}: it cannot be the {role}. Distillation trains with float gradients and "
            f"reads float logits.{instead}{after}")


def default_student_model(teacher: Variant | None) -> str:
    """The registry's declared student of the teacher's architecture, else lenet5-small."""
    arch = (teacher.arch or {}).get("name") if teacher is not None else None
    named = [s.name for s in list_models() if arch and s.student_of == arch]
    return named[0] if named else DEFAULT_STUDENT


def _keep_valid(key: str, options: list) -> None:
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def explainer() -> None:
    forms.explainer(EXPLAINER, LESSONS)


# ---------------------------------------------------------------- the form

def distill_form(variants: tuple[Variant, ...], active: Variant | None) -> DistillJobConfig | None:
    """The teacher, the student and the settings; returns a validated DistillJobConfig, or None
    (with the reason shown) when it cannot start: a quantized teacher or student, two datasets,
    a setting the engine refuses."""
    by_id = {v.id: v for v in variants}
    ids = list(by_id)
    floats = [v.id for v in variants if not is_quantized(v)]
    if active is not None and active.id in floats:
        teacher_default = active.id
    else:
        teacher_default = "base-lenet5" if "base-lenet5" in floats else (floats[0] if floats else ids[0])
    _keep_valid(K + "teacher", ids)
    _keep_valid(K + "student-variant", ids)

    c_teacher, c_source, c_student = st.columns([3, 2, 3])
    teacher_id = c_teacher.selectbox(
        "Teacher", ids, index=ids.index(teacher_default), key=K + "teacher",
        format_func=lambda i: variant_label(by_id[i]),
        help="A trained float variant whose softened class scores the student learns to imitate (default: the "
             "active variant).")
    teacher = by_id[teacher_id]
    source = c_source.radio("Student", list(SOURCES), format_func=SOURCES.get, key=K + "student-source",
                            help="Train a fresh small model from the registry, or train an existing variant "
                                 "further against the teacher (a pruned one keeps its zeros, a shrunk one its shapes).")
    if source == "model":
        names = [s.name for s in list_models()]
        desc = {s.name: s.description for s in list_models()}
        _keep_valid(K + "student-model", names)
        default = default_student_model(teacher)
        student = c_student.selectbox(
            "Student model", names, index=names.index(default), key=K + "student-model",
            format_func=lambda n: f"{n}: {desc[n]}",
            help="Built untrained for the teacher's dataset; the result is a new root variant whose recipe names "
                 "the teacher. The torchvision models take minutes per epoch on a CPU.")
        student_v = None
    else:
        others = [i for i in floats if i != teacher_id] or ids
        smallest = min(others, key=lambda i: by_id[i].metrics.get("params") or math.inf)
        student = c_student.selectbox(
            "Student variant", ids, index=ids.index(smallest), key=K + "student-variant",
            format_func=lambda i: variant_label(by_id[i]),
            help="Trained further against the teacher; the result is its child. Default: the smallest float "
                 "variant other than the teacher.")
        student_v = by_id[student]

    st.markdown("**Loss and budget**")
    c = st.columns([2, 2, 1, 1.1, 1, 1.4])
    d = DEFAULTS.distill
    temperature = c[0].slider(
        "Temperature T", 1.0, 20.0, d.temperature, 0.5, key=K + "temperature", format="%.1f",
        help="Softens both models' class scores before they are compared: a higher T shows the student more of "
             "the teacher's ranking of the wrong classes (the soft loss is scaled by T²).")
    alpha = c[1].slider(
        "Soft-loss weight alpha", 0.0, 1.0, d.alpha, 0.05, key=K + "alpha", format="%.2f",
        help="Total loss = alpha × soft loss (match the teacher) + (1 − alpha) × hard loss (cross-entropy with "
             "the true labels). 0 ignores the teacher.")
    epochs = c[2].number_input("Epochs", 1, 50, d.epochs, key=K + "epochs",
                               help="Passes over the training images; 2 epochs of 10,000 images take about a "
                                    "minute on this CPU, measuring included.")
    lr = c[3].number_input("Learning rate", 1e-5, 1.0, d.lr, 0.001, format="%.4f", key=K + "lr",
                           help="SGD with momentum and cosine decay; above 0.01 the T²-scaled soft loss can "
                                "diverge.")
    seed = c[4].number_input("Seed", 0, 2**31 - 1, d.seed, key=K + "seed",
                             help="Fixes the student's initial weights and the batch order; the ablation reuses it.")
    subset = c[5].number_input("Training images", 0, 1_000_000, DEFAULTS.subset, 1000, key=K + "subset",
                               help="Train on this many training images (0 = the whole training split); "
                                    "validation and test stay whole.")
    with st.expander("More settings"):
        c = st.columns(3)
        batch = c[0].number_input("Batch size", 1, 4096, d.batch_size, 16, key=K + "batch",
                                  help="Images per optimizer step")
        optimizer = c[1].selectbox("Optimizer", ["sgd", "adam", "adamw"], key=K + "optimizer",
                                   help="SGD with Nesterov momentum 0.9, or Adam/AdamW; cosine learning-rate decay")
        name = c[2].text_input("Name of the result (optional)", key=K + "name",
                               help="Default: the student's name, the teacher's and the settings",
                               placeholder=f"{student if student_v is None else student_v.name} | distilled")

    problems = []
    if is_quantized(teacher):
        problems.append(quantized_message(teacher, "teacher"))
    if student_v is not None and is_quantized(student_v):
        problems.append(quantized_message(student_v, "student"))
    if student_v is not None and student_v.dataset != teacher.dataset:
        problems.append(f"The student **{student_v.name}** was trained on {student_v.dataset} and the teacher "
                        f"**{teacher.name}** on {teacher.dataset}: distillation needs one dataset.")
    for p in problems:
        st.error(p, icon=":material/block:")
    if problems:
        return None
    try:
        return DistillJobConfig(teacher=teacher_id, student=student, subset=int(subset) or None,
                                name=name.strip() or None,
                                distill=DistillConfig(temperature=float(temperature), alpha=float(alpha),
                                                      epochs=int(epochs), lr=float(lr), seed=int(seed),
                                                      batch_size=int(batch), optimizer=optimizer))
    except ValueError as e:
        st.error(f"Invalid settings: {e}", icon=":material/error:")
        return None


def budget_caption(config: DistillJobConfig, teacher: Variant | None) -> None:
    from core.data.datasets import get_info

    d = config.distill
    n = config.subset
    steps = f"{math.ceil(n / d.batch_size) * d.epochs:,} optimizer steps" if n else "every training image"
    temp = "" if d.alpha == 0 else f"; the teacher's scores are softened with T = {d.temperature:g}"
    what = ("plain cross-entropy: alpha 0 means the teacher is ignored (this is the ablation)" if d.alpha == 0 else
            f"{d.alpha:.0%} soft loss (imitate {teacher.name if teacher else 'the teacher'}), "
            f"{1 - d.alpha:.0%} hard loss (true labels){temp}")
    try:
        title = get_info(teacher.dataset, resources.workspace().root).title if teacher else ""
    except ValueError:
        title = teacher.dataset if teacher else ""
    images = f"{n:,} {title} training images" if n else f"the whole {title} training split"
    student = resources.variant(config.student)
    who = (f"**{student.name}** continues from its trained weights; the result, measured on the full test split, "
           "is stored as its child." if student is not None else
           f"A fresh, untrained **{config.student}** learns; the result, measured on the full test split, is stored "
           "as a new variant.")
    st.caption(f"{images} × {d.epochs} epoch(s), batch {d.batch_size} ({steps}); loss: {what}. {who}")


# ---------------------------------------------------------------- pairing a distillation with its ablation

def experiment_key(config: dict) -> str:
    """What a distillation and its ablation share: the job config apart from `ablation` and `name`."""
    return json.dumps({k: v for k, v in config.items() if k not in ("ablation", "name")}, sort_keys=True)


def ablation_config(config: dict, ablation: bool = True) -> DistillJobConfig:
    """The partner of a distill job's config: the same student, budget, data and seed, with the
    teacher (ablation=False) or without it (ablation=True). A chosen name gets a suffix, so the
    two results are told apart."""
    name = config.get("name")
    base = name.removesuffix(" (scratch)") if name else None
    return DistillJobConfig.from_dict({**config, "ablation": ablation,
                                       "name": (f"{base} (scratch)" if ablation else base) if base else None})


@dataclass
class Experiment:
    key: str
    distill: Job | None       # the run with the teacher
    ablation: Job | None      # the same without it
    jobs: list[Job]           # every job of the pair, newest first

    @property
    def newest(self) -> Job:
        return self.jobs[0]


def _pick(jobs: list[Job]) -> Job | None:
    """The job that stands for its side of a pair: the newest one that did not fail or stop."""
    good = [j for j in jobs if j.state not in BAD_END]
    return (good or jobs or [None])[0]


def experiments(all_jobs) -> list[Experiment]:
    """Distill jobs grouped into (distillation, ablation) pairs, newest first."""
    groups: dict[str, list[Job]] = {}
    for j in sorted((j for j in all_jobs if j.kind == "distill"), key=lambda j: -j.created_at):
        groups.setdefault(experiment_key(j.config), []).append(j)
    return [Experiment(key, _pick([j for j in js if not j.config.get("ablation")]),
                       _pick([j for j in js if j.config.get("ablation")]), js) for key, js in groups.items()]


def experiment_label(e: Experiment) -> str:
    from ui.widgets import fmt_when

    head = e.distill or e.ablation
    parts = [f"{head.title}"]
    parts.append(f"distillation {e.distill.state}" if e.distill else "no distillation")
    parts.append(f"ablation {e.ablation.state}" if e.ablation else "no ablation yet")
    return " · ".join(parts) + f" · {fmt_when(e.newest.created_at)}"


def pick_experiment(exps: list[Experiment]) -> Experiment:
    """The pair this session looks at: the one it started last, else the one it chose, else the newest."""
    keys = [e.key for e in exps]
    by_key = {e.key: e for e in exps}
    last = state.last_job()
    if last and st.session_state.get(K + "seen-job") != last:
        st.session_state[K + "seen-job"] = last
        mine = next((e.key for e in exps if any(j.id == last for j in e.jobs)), None)
        if mine is not None:
            st.session_state[K + "run"] = mine
    _keep_valid(K + "run", keys)
    if len(exps) == 1:
        st.session_state[K + "run"] = keys[0]
        return exps[0]
    key = st.selectbox("Distillation run", keys, key=K + "run", format_func=lambda k: experiment_label(by_key[k]),
                       help="A distillation and its ablation (the same settings without the teacher) are shown "
                            "together; the newest first.")
    return by_key[key]


# ---------------------------------------------------------------- inside a job card

def job_chart(ws, job: Job) -> None:
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


# ---------------------------------------------------------------- results

def _variant_of(job: Job | None) -> Variant | None:
    if job is None or job.state != "done" or not job.variant_id:
        return None
    return resources.variant(job.variant_id)


def produced(e: Experiment) -> tuple[Variant | None, Variant | None, Variant | None]:
    """(teacher, distilled, scratch) variants of a pair, None where missing or not finished."""
    head = e.distill or e.ablation
    return resources.variant(head.config.get("teacher", "")), _variant_of(e.distill), _variant_of(e.ablation)


def numbers_table(rows: list[tuple[str, Variant]], teacher: Variant) -> None:
    t = teacher.metrics

    def vs_teacher(v: Variant) -> str:
        a, ta = v.metrics.get("accuracy"), t.get("accuracy")
        return "–" if v.id == teacher.id or a is None or ta is None else f"{(a - ta) * 100:+.2f}"

    st.dataframe(table([{
        "role": role, "variant": v.name, "test accuracy": v.metrics.get("accuracy"), "vs teacher (pp)": vs_teacher(v),
        "parameters": human_count(v.metrics.get("params")), "size": human_bytes(v.metrics.get("size_bytes")),
        "x smaller": (t.get("size_bytes") / v.metrics["size_bytes"]) if t.get("size_bytes")
        and v.metrics.get("size_bytes") else None,
        "latency b1": fmt_ms(v.metrics.get("latency_ms_b1")), "latency b64": fmt_ms(v.metrics.get("latency_ms_b64")),
        "id": v.id,
    } for role, v in rows]), hide_index=True, width="stretch", key=K + "numbers", column_config={
        "variant": st.column_config.TextColumn(width="large"),
        "test accuracy": st.column_config.NumberColumn(format="percent", help="Full test split, measured on the "
                                                                             "stored file"),
        "vs teacher (pp)": st.column_config.TextColumn(help="Test accuracy against the teacher, in percentage points"),
        "x smaller": st.column_config.NumberColumn(format="%.1fx", help="Teacher's download size / this one's"),
        "latency b1": st.column_config.TextColumn(help="Median forward pass at batch 1 after warm-up (see the note "
                                                       "on whether they compare)"),
        "latency b64": st.column_config.TextColumn(help="Median forward pass at batch 64 after warm-up"),
    })


def student_latency(teacher: Variant, student: Variant) -> tuple[float | None, float | None, str]:
    """(student ms, teacher ms or None when not comparable, how they were timed) at batch 64."""
    from core.base.ratios import busy_warning

    s, t = student.metrics, teacher.metrics
    sl = s.get("latency_ms_b64")
    if s.get("teacher_latency_ms_b64") and not busy_warning(s):
        return sl, s["teacher_latency_ms_b64"], ("Median forward pass after warm-up; the teacher was timed "
                                                 "alternately with the student in the same call.")
    if busy_warning(s) or busy_warning(t):
        return sl, None, "Not compared with the teacher: " + (busy_warning(s) or busy_warning(t))
    if s.get("device") != t.get("device"):
        return sl, None, (f"Not compared with the teacher: measured on {s.get('device')}, the teacher on "
                          f"{t.get('device')}.")
    return sl, t.get("latency_ms_b64"), f"Both medians after warm-up on {s.get('device')}, measured separately."


def _vs_teacher(ratio: float) -> str:
    words = speed_words(ratio)
    return "same speed as teacher" if words == "same speed" else f"{words} than teacher"


def student_next_to_teacher(teacher: Variant, student: Variant) -> None:
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
    sl, tl, basis = student_latency(teacher, student)
    cols[4].metric("Latency, batch 64", fmt_ms(sl), _vs_teacher(tl / sl) if sl and tl else None,
                   delta_color="off", delta_arrow="off", help=basis)


def latency_note(cmp: dict, roles: dict[str, Variant]) -> None:
    """Say whether the three latencies can be compared, and why not."""
    from core.base.ratios import busy_warning

    if cmp["latency_comparable"]:
        st.caption(f"Latencies: all three measured on {cmp['teacher']['device']} with no sign of other load, so "
                   "they can be compared (each is a median after warm-up).")
        return
    why = []
    devices: dict[str, list[str]] = {}
    for r in ("teacher", "distilled", "scratch"):
        devices.setdefault(cmp[r]["device"] or "an unknown device", []).append(r)
    if len(devices) > 1:
        why.append("measured on different devices (" + "; ".join(f"{' and '.join(rs)} on {d}"
                                                                   for d, rs in devices.items()) + ")")
    busy = [r for r, v in roles.items() if busy_warning(v.metrics)]
    if busy:
        why.append(f"{' and '.join(busy)} timed while other work was running")
    why = why or ["they were not timed the same way"]
    st.warning("Latencies not compared: " + ", and ".join(why) + ". Compare accuracy and size; time them again "
               "on the Model page (Measure latency again) before comparing speed.", icon=":material/warning:")


def comparison(ws, teacher: Variant, distilled: Variant, scratch: Variant) -> None:
    """Teacher, distilled student and scratch student side by side, the gap closed and the verdict."""
    from core.data.datasets import get_info

    roles = {"teacher": teacher, "distilled": distilled, "scratch": scratch}
    per_class, pc_error = None, None
    with st.spinner("Measuring per-class accuracy on the test split (once per variant)…"):
        try:
            per_class = resources.distill_class_accuracies(tuple(roles.values()))
        except Exception as e:   # noqa: BLE001  (a missing dataset is one line, not a traceback)
            pc_error = f"{type(e).__name__}: {e}"
    cmp = compare_distillation(teacher, distilled, scratch, per_class=per_class)
    closed = cmp["gap_closed"]
    t, d, s = (cmp[r]["accuracy"] for r in ("teacher", "distilled", "scratch"))
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
    numbers_table([("teacher", teacher), ("distilled", distilled), ("scratch", scratch)], teacher)
    latency_note(cmp, roles)
    if cmp.get("per_class"):
        try:
            names = get_info(teacher.dataset, ws.root).class_names
        except ValueError:
            names = None
        key = ("distill-classes", *[(v.id, v.created_at) for v in roles.values()])
        fig = resources.figure(key, lambda: class_delta_chart(cmp["per_class"], names,
                                                              title="Per-class test accuracy: what distillation "
                                                                    "bought and what is still missing"))
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
    elif pc_error:
        st.caption(f"Per-class accuracies could not be measured here: {pc_error}")

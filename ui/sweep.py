"""A sweep section, drawn by the Distill page (temperature × alpha) and the Prune page (amount ×
fine-tune epochs): the grid form and Start, the family's sweep jobs with their trials growing live,
and the latest finished sweep: its trials table, the heatmap over the grid, accuracy vs file size,
why the best trial was chosen and a button to open it. `job_trials` draws a sweep inside any job
card (the Jobs page). The engine is core.tasks.sweep; the figures come from core.viz.sweep."""
from __future__ import annotations

import streamlit as st

from core.base.units import human_bytes
from core.models.registry import default_student, list_models
from core.run.runners import runner_name
from core.store.jobstore import Job
from core.store.workspace import Variant, Workspace
from core.tasks.sweep import DEFAULT_GRIDS, DEFAULT_OBJECTIVE, SweepJobConfig, sweep_result
from core.tasks.sweep_grid import FAMILIES, MAX_TRIALS, MAX_VALUES, OBJECTIVES
from core.viz.sweep import BEST_MARK, fmt_value, sweep_heatmap, sweep_scatter, trial_label
from ui import resources, state
from ui.job_cards import show_jobs, start_job
from ui.widgets import fmt_duration, table, variant_label

# values offered per axis (each family's defaults are among them)
CHOICES = {"temperature": (1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 20.0),
           "alpha": (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 0.95, 1.0),
           "amount": (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98),
           "epochs": (1, 2, 3, 4, 5, 8)}
AXIS_HELP = {
    "temperature": "Softens both models' class scores before they are compared; each value is tried with each alpha.",
    "alpha": "Weight of the soft loss (match the teacher) against the labels: 0 ignores the teacher, 1 uses only it.",
    "amount": "Share of the weights removed (L1, global over all prunable layers) before fine-tuning.",
    "epochs": "Fine-tuning epochs after pruning, with the pruned weights held at zero.",
}
WHERE = {"local": "one after another in a background job",
         "ray": "in parallel with Ray Tune across the cluster"}
BAD_END = ("failed", "cancelled", "interrupted")


def key(family: str) -> str:
    """Every widget key of a family's section starts with it."""
    return f"sweep-{family}-"


def where_trials_run() -> str:
    return WHERE.get(runner_name(), f"on the {runner_name()} runner")


# ---------------------------------------------------------------- the form

def sweep_form(family: str, variants: tuple[Variant, ...], active: Variant | None) -> SweepJobConfig | None:
    """The parent (or teacher), the values of the two settings and the budget; a validated
    SweepJobConfig, or None with the reason shown (no value picked, too many trials, ...)."""
    k, (ax, ay) = key(family), FAMILIES[family]["axes"]
    la, lb = FAMILIES[family]["labels"]
    by_id = {v.id: v for v in variants if v.is_float}
    if not by_id:
        st.info("Every variant here is quantized: a sweep needs a float one.", icon=":material/info:")
        return None
    ids = list(by_id)
    default = active.id if active is not None and active.id in by_id else ids[0]
    if st.session_state.get(k + "variant") not in (None, *ids):
        del st.session_state[k + "variant"]
    c = st.columns([3, 2] if family == "distill" else [1])
    distill = family == "distill"
    vid = c[0].selectbox(
        "Teacher" if distill else "Parent", ids, index=ids.index(default), key=k + "variant",
        format_func=lambda i: variant_label(by_id[i]),
        help="The trained variant every trial distills from (default: the active one)." if distill else
             "The variant every trial prunes and fine-tunes (default: the active one); each trial starts from it.")
    student = None
    if distill:
        names = [s.name for s in list_models()]
        student = c[1].selectbox(
            "Student model", names, index=names.index(default_student((by_id[vid].arch or {}).get("name"))), key=k + "student",
            help="The small model each trial trains from scratch against the teacher (one fresh copy per trial).")

    c = st.columns(2)
    picked = {}
    for col, axis, label in ((c[0], ax, la), (c[1], ay, lb)):
        options = sorted({*CHOICES[axis], *DEFAULT_GRIDS[family][axis]})
        picked[axis] = col.multiselect(
            f"Values of {label}", options, default=list(DEFAULT_GRIDS[family][axis]), key=k + axis,
            format_func=lambda v, a=axis: fmt_value(a, v), max_selections=MAX_VALUES,
            help=f"{AXIS_HELP[axis]} Up to {MAX_VALUES} values; the sweep tries every combination with the "
                 "other setting's values.")

    c = st.columns(2 if distill else 3)
    if distill:
        epochs = c[0].number_input("Epochs per trial", 1, 20, SweepJobConfig.epochs, key=k + "epochs",
                                   help="Training passes of each trial's student over its training images.")
    subset = c[1 if distill else 0].number_input(
        "Training images per trial (0 = all)", 0, 1_000_000, SweepJobConfig.subset, 1000, key=k + "subset",
        help="Each trial trains on this many training images (the same ones for every trial); the best trial is "
             "chosen on the validation split, and every result is then measured on the whole test split.")
    objective, tolerance = DEFAULT_OBJECTIVE[family], 0.01
    if not distill:
        objective = c[1].radio(
            "Best trial", list(OBJECTIVES), index=list(OBJECTIVES).index(objective), key=k + "objective",
            format_func=lambda o: {"val_accuracy": "Most accurate", "smallest_within": "Smallest file within the "
                                   "tolerance"}[o],
            help="Most accurate: the highest validation accuracy. Smallest file within the tolerance: the smallest "
                 "download whose validation accuracy is at most the tolerance below the parent's (else the most "
                 "accurate).")
        if objective == "smallest_within":
            tolerance = c[2].number_input(
                "Tolerance (points)", 0.0, 20.0, 1.0, 0.5, format="%.1f", key=k + "tolerance",
                help="How far below the parent's validation accuracy a trial may fall and still count, in "
                     "percentage points (1.0 = one point, e.g. 90.0% -> 89.0%).") / 100

    if not picked[ax] or not picked[ay]:
        st.warning(f"Pick at least one value of {la} and one of {lb}.", icon=":material/warning:")
        return None
    n = len(picked[ax]) * len(picked[ay])
    if n > MAX_TRIALS:
        st.error(f"{len(picked[ax])} × {len(picked[ay])} = {n} trials: a sweep runs at most {MAX_TRIALS}. "
                 "Remove some values.", icon=":material/error:")
        return None
    try:
        config = SweepJobConfig(
            variant=vid, family=family, grid={a: [float(x) for x in picked[a]] for a in (ax, ay)},
            student=student or "lenet5-small", epochs=int(epochs) if distill else SweepJobConfig.epochs,
            subset=int(subset) or None, objective=objective, tolerance=float(tolerance))
    except ValueError as e:
        st.error(f"Cannot start: {e}", icon=":material/error:")
        return None
    images = f"{int(subset):,} training images" if subset else "all training images"
    each = (f"trains a fresh {student} for {int(epochs)} epoch(s) on {images}" if distill else
            f"prunes {by_id[vid].name} (L1, global) and fine-tunes it on {images}")
    st.caption(f"**{len(picked[ax])} × {len(picked[ay])} = {n} trials**, run {where_trials_run()}. Each "
               f"{each}; the best by {OBJECTIVES[config.objective]} is kept as a variant, the others stay rows "
               "of the trials table.")
    return config


# ---------------------------------------------------------------- trials: table and charts

def trials_table(result: dict, *, key: str) -> None:
    """One row per trial: its settings, state, validation and test accuracy, file size, non-zeros,
    seconds and node; the best row starred."""
    (ax, ay), (la, lb) = result["axes"], (result.get("labels") or result["axes"])[:2]
    best = result.get("best_trial")
    rows = []
    for t in result["trials"]:
        m = t.get("metrics") or {}
        state_s = t.get("state", "queued")
        if state_s == "running":
            state_s = f"running {t.get('progress', 0.0):.0%}"
        rows.append({"best": BEST_MARK if best is not None and t["trial"] == best else "",
                     "trial": t["trial"] + 1, la: fmt_value(ax, t["params"][ax]), lb: fmt_value(ay, t["params"][ay]),
                     "state": state_s,
                     "val acc": _pct(m.get("val_accuracy")), "test acc": _pct(m.get("accuracy")),
                     "size (KB)": None if m.get("size_bytes") is None else round(m["size_bytes"] / 1000, 1),
                     "non-zeros": m.get("nonzero_params"), "seconds": t.get("seconds"), "node": t.get("node") or "",
                     "error": t.get("error") or ""})
    if not any(r["error"] for r in rows):
        for r in rows:
            del r["error"]
    st.dataframe(table(rows), hide_index=True, width="stretch", key=key, column_config={
        "best": st.column_config.TextColumn("", width=30, help="The trial the sweep kept as a variant"),
        "val acc": st.column_config.NumberColumn(format="%.2f%%", help="On the validation split: what picks the "
                                                 "best trial"),
        "test acc": st.column_config.NumberColumn(format="%.2f%%", help="On the whole test split: the result"),
        "size (KB)": st.column_config.NumberColumn(format="%.1f", help="The file you would download"),
        "non-zeros": st.column_config.NumberColumn(format="localized", help="Weights that are not zero"),
        "seconds": st.column_config.NumberColumn(format="%.1f", help="Wall time of the trial, measuring included"),
        "node": st.column_config.TextColumn(help="The machine the trial ran on"),
    })


def _pct(x) -> float | None:
    return None if x is None else round(x * 100, 2)


def charts(result: dict, *, key: str, stamp=None) -> None:
    """The heatmap over the grid and accuracy vs file size, side by side."""
    parent = resources.variant(result.get("parent") or "")
    size = parent.metrics.get("size_bytes") if parent is not None else None
    c = st.columns(2)
    heat = resources.figure(("sweep-heat", key, stamp), lambda: sweep_heatmap(result))
    c[0].plotly_chart(heat, key=key + "-heat", width="stretch")
    scatter = resources.figure(("sweep-scatter", key, stamp), lambda: sweep_scatter(result, parent_size_bytes=size))
    c[1].plotly_chart(scatter, key=key + "-scatter", width="stretch")


def _so_far(result: dict) -> str:
    """'3 of 6 trials done, 1 failed; the most accurate so far: ...' for a sweep's card."""
    trials = result["trials"]
    done = [t for t in trials if t.get("state") == "done" and (t.get("metrics") or {}).get("val_accuracy") is not None]
    failed = sum(t.get("state") in BAD_END for t in trials)
    text = f"{len(done)} of {len(trials)} trials done" + (f", {failed} failed" if failed else "")
    if done:
        top = max(done, key=lambda t: t["metrics"]["val_accuracy"])
        text += (f". Most accurate so far: {trial_label(result, top)}, validation accuracy "
                 f"{top['metrics']['val_accuracy']:.2%}")
    if result.get("why"):
        text += f". Kept: {result['why']}" if result.get("best_trial") is not None else f". {result['why']}"
    ref = result.get("reference_val_accuracy")
    who = "teacher" if result.get("family") == "distill" else "parent"
    return text + (f"; the {who}'s: {ref:.2%}." if ref is not None else ".")


def job_trials(ws: Workspace, job: Job) -> None:
    """A sweep job's trials inside its card (any page): the table and the heatmap, live while it runs."""
    if job.kind != "sweep":
        return
    events = resources.job_events(job.id)
    result = sweep_result(job, list(events))
    if result is None:
        if not job.is_final:
            st.caption("The trials table appears once the parent is loaded and its validation accuracy measured.")
        return
    stamp = (events[-1]["seq"] if events else 0, job.state)
    trials_table(result, key=f"sweep-card-{job.id}-table")
    c = st.columns(2)
    heat = resources.figure(("sweep-heat", job.id, stamp), lambda: sweep_heatmap(result))
    c[0].plotly_chart(heat, key=f"sweep-card-{job.id}-heat", width="stretch")
    c[1].caption(_so_far(result))


def live_trials(ws: Workspace, job: Job) -> None:
    """In the section's own cards: the trials while the sweep runs (the finished one is drawn below)."""
    if not job.is_final:
        job_trials(ws, job)


# ---------------------------------------------------------------- the section

def section(ws: Workspace, family: str, active: Variant | None) -> None:
    """The whole sweep section of a page: form and Start, this family's sweep jobs, the latest result."""
    k = key(family)
    st.markdown(f"Try every combination of a few values of **{FAMILIES[family]['labels'][0]}** and "
                f"**{FAMILIES[family]['labels'][1]}** in one job. Each trial is scored on the **validation** split; "
                "the best one is kept as a variant and every trial stays a row of the table, so you can see how the "
                "two settings interact."
                + (" Each trial prunes with **L1 magnitude, global** over all prunable layers (not the settings "
                   "above), then fine-tunes with the pruned weights held at zero." if family == "prune_finetune"
                   else ""))
    variants = resources.variants()
    config = sweep_form(family, variants, active)
    if st.button("Start sweep", type="primary", key=k + "start", icon=":material/grid_view:", disabled=config is None,
                 help="Queue one background job that runs every trial of the grid and keeps the best as a variant"):
        start_job(ws, "sweep", config)

    mine = [j for j in resources.job_list(limit=200) if j.kind == "sweep" and j.config.get("family") == family]
    if not mine:
        st.caption("No sweep yet: press **Start sweep**. Its trials fill the table and the heatmap as they finish, "
                   "here and on the Jobs page.")
        return
    live = [j.id for j in mine if not j.is_final]
    if live:      # a finished sweep is drawn in full below, not as a card

        def cards(w):
            by_id = {j.id: j for j in resources.job_list(limit=200)}
            return [by_id[i] for i in live if i in by_id]

        show_jobs(cards, key=k + "job", curves=False, log=False, extra=live_trials)
    latest = next((j for j in mine if j.is_final), None)
    if latest is not None:
        results(latest, key=k + "result")


def results(job: Job, *, key: str) -> None:
    """A finished sweep: what was chosen and why, the trials table, the two charts, open the best."""
    result = sweep_result(job, list(resources.job_events(job.id)))
    name = result.get("parent_name") if result else None
    parent = resources.variant(job.config.get("variant", ""))
    st.markdown(f"##### Latest finished sweep of {name or getattr(parent, 'name', job.config.get('variant'))}")
    if job.state in BAD_END:
        what = {"failed": "failed", "cancelled": "was cancelled", "interrupted": "was interrupted"}[job.state]
        done = sum(t.get("state") == "done" for t in result["trials"]) if result else 0
        total = len(result["trials"]) if result else 0
        msg = (f"This sweep {what}: {job.error or job.message or 'no reason recorded'}. No variant was kept"
               + (f"; {done} of {total} trials had finished (their rows are below)." if result else "."))
        (st.error if job.state == "failed" else st.warning)(msg, icon=":material/error:")
        if result:
            trials_table(result, key=key + "-table")
        return
    if not result or result.get("partial"):
        st.warning("This sweep finished but its result was not stored.", icon=":material/warning:")
        return
    best = next((t for t in result["trials"] if t["trial"] == result.get("best_trial")), None)
    secs = fmt_duration(result.get("wall_seconds"))
    mode = ("in parallel with Ray Tune" if result.get("mode") == "ray_tune" else "one after another")
    if best is not None:
        m = best["metrics"]
        text = (f"Best: trial {best['trial'] + 1} ({trial_label(result, best)}): validation accuracy "
                f"{m['val_accuracy']:.2%}, test accuracy {m['accuracy']:.2%}, file {human_bytes(m.get('size_bytes'))}. "
                f"Chosen as {result['why']}.")
        (st.warning if result["why"].startswith("no trial stayed") else st.success)(text, icon=":material/star:")
    ref = result.get("reference_val_accuracy")
    who = "teacher" if result.get("family") == "distill" else "parent"
    st.caption(f"{len(result['trials'])} trials ran {mode} in {secs} (job `{job.id}`, {job.runner or 'local'} runner). "
               + (f"The {who}'s validation accuracy: {ref:.2%}." if ref is not None else ""))
    trials_table(result, key=key + "-table")
    charts(result, key=key, stamp=(job.id, job.state))
    made = resources.variant(result["variant_id"]) if result.get("variant_id") else None
    if made is None:
        if result.get("variant_id"):
            st.caption(f"The best trial's variant (`{result['variant_id']}`) has been deleted since.")
        return
    is_active = state.active_variant_id() == made.id
    if st.button(f"Open the best trial's variant: {made.name}" if not is_active else f"{made.name} is active",
                 key=key + "-open-best", on_click=state.set_active_variant, args=(made.id,),
                 icon=":material/arrow_forward:", type="secondary",
                 help="Make the variant the sweep kept the active one and open it on the Model page"):
        st.switch_page("pages/model.py")

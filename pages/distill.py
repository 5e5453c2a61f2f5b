"""Distill: train a small student to imitate a trained teacher (Hinton KD) as a background job with
live curves; one click trains the same student without the teacher (the ablation); then the
teacher, the distilled student and the scratch student side by side, with the share of the
teacher-student gap distillation closed. The Sweep tab runs a grid of temperature × alpha in one job."""
import streamlit as st

from core.tasks.distill import DistillJobConfig
from ui import distill_view, nav, resources, state, sweep_view
from ui.jobs_view import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = distill_view.K

# ---------------------------------------------------------------- guard

ws = resources.workspace()
st.title("Distill")
st.caption("Knowledge distillation: a small **student** learns from a trained **teacher**'s softened class scores "
           "as well as from the true labels. **Start** runs it as a background job with live curves; the "
           "**ablation** trains the same student with the same budget and seed on the labels alone, so you can see "
           "what the teacher added.")
distill_view.explainer()
variants = resources.variants()
if not variants:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page; it can then be a teacher.",
            icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------- one run | a sweep of the grid

tab_one, tab_sweep = st.tabs(["One run", "Sweep temperature × alpha"])
with tab_sweep:     # drawn first: the one-run tab below may st.stop() (no run yet)
    sweep_view.section(ws, "distill", state.active_variant(ws))

with tab_one:
    # ------------------------------------------------------------ widgets -> config -> Start


    st.subheader("Teacher and student")
    config: DistillJobConfig | None = distill_view.distill_form(variants, state.active_variant(ws))
    all_pairs = distill_view.experiments(resources.job_list(limit=200))
    if config is not None:
        teacher = resources.variant(config.teacher)
        distill_view.budget_caption(config, teacher)
        same = next((e for e in all_pairs if e.key == distill_view.experiment_key(config.to_dict())
                     and e.distill is not None and e.distill.state not in distill_view.BAD_END), None)
        if same is not None:
            st.info(f"These exact settings were already started (job `{same.distill.id}`, {same.distill.state}; see Runs). "
                    "Starting again trains the same student again (same seed); change the seed for another sample.",
                    icon=":material/content_copy:")
    if st.button("Start distillation", type="primary", key=K + "start", icon=":material/play_arrow:",
                 disabled=config is None,
                 help="Queue a background job that distills the teacher into the student, then measures the result on "
                      "the full test split and stores it as a variant"):
        start_job(ws, "distill", config)

    # ---------------------------------------------------------------- runs: a distillation and its ablation

    st.subheader("Runs")
    if not all_pairs:
        st.caption("No distillation yet: press **Start distillation** above. Its progress and curves show here and on "
                   "the Jobs page.")
        st.stop()
    pair = distill_view.pick_experiment(all_pairs)
    shown = [j.id for j in (pair.distill, pair.ablation) if j is not None]


    def cards(w):
        """The pair's jobs, then any other distill job still queued or running (started anywhere)."""
        listed = resources.job_list(limit=200)     # read once per change of the job store, shared by every session
        by_id = {j.id: j for j in listed}
        mine = [by_id[jid] for jid in shown if jid in by_id]    # a job deleted meanwhile is simply not drawn
        others = [j for j in listed if j.kind == "distill" and not j.is_final and j.id not in shown]
        return mine + others


    show_jobs(cards, key=K + "job", curves=False, log=False, extra=distill_view.job_chart)

    # the missing half of the pair, one click away
    head = pair.distill or pair.ablation
    if head.state not in distill_view.BAD_END:
        if pair.ablation is None:
            student = head.config.get("student")
            student_name = getattr(resources.variant(student), "name", student)
            if st.button("Start the ablation: the same student without the teacher", key=K + "ablation",
                         icon=":material/science:",
                         help=f"Train {student_name} with the same budget, data and seed on the true labels only "
                              "(alpha 0), so the comparison shows what the teacher added"):
                start_job(ws, "distill", distill_view.ablation_config(head.config))
            st.caption("The comparison with the teacher and the verdict appear when both runs are done.")
        elif pair.distill is None:
            if st.button("Start the matching distillation (with the teacher)", key=K + "with-teacher",
                         icon=":material/school:", help="The same settings as this ablation, with the teacher"):
                start_job(ws, "distill", distill_view.ablation_config(head.config, ablation=False))

    # ---------------------------------------------------------------- results

    teacher_v, distilled_v, scratch_v = distill_view.produced(pair)
    if distilled_v is not None and teacher_v is not None:
        st.subheader(f"Result: {distilled_v.name}")
        distill_view.student_next_to_teacher(teacher_v, distilled_v)
    if teacher_v is not None and distilled_v is not None and scratch_v is not None:
        st.subheader("Did distillation help?")
        distill_view.comparison(ws, teacher_v, distilled_v, scratch_v)
    elif distilled_v is not None and teacher_v is not None:
        distill_view.numbers_table([("teacher", teacher_v), ("distilled", distilled_v)], teacher_v)
    elif teacher_v is None and head.is_final:
        st.info(f"The teacher of this run ({head.config.get('teacher')}) is no longer in the workspace: nothing to "
                "compare with.", icon=":material/info:")

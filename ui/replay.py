"""Recipes: download a variant's recipe as JSON, and replay a recipe (this variant's, or an
uploaded one) as a background job that makes every step again from its root.

The Export page calls `replay_section(ws, variant, offer_download=False)` at its end (its recipe
card offers the checked file); with the download, the section stands alone (its test draws it so)."""
from __future__ import annotations

import json

import streamlit as st

from core.base.limits import MAX_RECIPE_BYTES
from core.io.export.formats import file_name
from core.store.jobstore import Job
from core.store.workspace import Workspace
from core.tasks.recipe_replay import RecipeError, parse_recipe, preflight, read_recipe_file
from core.tasks.replay import ReplayJobConfig
from ui import resources, state
from ui.job_cards import show_jobs, start_job

K = "replay-"
RECENT_JOBS = 2


def recipe_json(variant) -> str:
    return json.dumps(variant.recipe, indent=2)


def _replay_jobs(w: Workspace) -> list[Job]:
    mine = state.last_job()
    jobs = [j for j in resources.job_list(limit=100) if j.kind == "replay"]
    return [j for j in jobs if not j.is_final or j.id == mine][:RECENT_JOBS]


def _comparison(ws: Workspace, job: Job) -> None:
    """Inside a finished replay job's card: the replayed variant next to the original."""
    res = job.result or {}
    if job.state != "done" or not res:
        return
    originals = res.get("originals") or []
    if not originals:
        st.caption("No variant in this workspace had this recipe before, so there is nothing to compare with.")
        return
    o = originals[0]
    delta = res.get("accuracy_delta_points")
    same = o.get("params") == res.get("params") and o.get("nonzero_params") == res.get("nonzero_params")
    st.markdown(f"Original **{o['name']}** (`{o['id']}`): accuracy {o['accuracy']:.2%} · replayed "
                f"{res['accuracy']:.2%}" + (f" (**{delta:+.2f} points**)" if delta is not None else "")
                + (" · same parameters and non-zeros" if same else " · :orange[parameters differ]"))


def _plan_and_start(ws: Workspace, recipe: list[dict], key: str, label: str) -> None:
    reuse = st.checkbox("Start from an existing root when one matches", value=True, key=key + "reuse",
                        help="Use a variant here made by exactly the recipe's first step (a shipped baseline, "
                             "say) instead of training the root again")
    try:
        plan = preflight(ws, recipe, reuse_root=reuse)
    except RecipeError as e:
        st.error(f"Cannot replay: {e}", icon=":material/block:")
        return
    st.markdown("\n".join(f"- {line}" for line in plan))
    name = st.text_input("Name of the result (optional)", key=key + "name", max_chars=120,
                         help="The name of the last step's variant; empty: its usual name")
    if st.button(label, key=key + "start", type="primary", icon=":material/replay:",
                 help="Queue a background job that runs every step again, each with its recorded seed"):
        start_job(ws, "replay", ReplayJobConfig(recipe=recipe, reuse_root=reuse, name=name.strip() or None))


def replay_section(ws: Workspace, variant, *, offer_download: bool = True) -> None:
    """The recipe of `variant` as a JSON download (unless the page offers it already:
    `offer_download=False`), and replaying a recipe (this one or an upload) as a job."""
    st.subheader("Replay a recipe")
    st.caption("The recipe is the list of steps (with their settings and seeds) that made this variant from its "
               "root. Replaying it runs every step again and makes a new variant, which should match this one "
               "within run-to-run noise. From the command line: `python -m core replay RECIPE.json`.")
    with st.container(horizontal=True, vertical_alignment="center"):
        if offer_download:
            st.download_button("Download the recipe (JSON)", recipe_json(variant), file_name=file_name(variant, "recipe"),
                               mime="application/json", key=K + "download", icon=":material/receipt_long:",
                               help="The steps that made this variant, replayable with `python -m core replay`")
        st.caption(f"This variant's recipe: {len(variant.recipe)} step{'s' if len(variant.recipe) != 1 else ''}, "
                   + " → ".join(str(s.get("step")) for s in variant.recipe if isinstance(s, dict)))
    with st.expander("Show the recipe"):
        st.code(recipe_json(variant), language="json")

    this, upload = st.tabs(["Replay this variant's recipe", "Replay an uploaded recipe"])
    with this:
        try:
            parse_recipe(variant.recipe)
        except RecipeError as e:
            st.info(f"This recipe cannot be replayed: {e}", icon=":material/info:")
        else:
            _plan_and_start(ws, variant.recipe, K + "this-", "Replay this recipe")
    with upload:
        up = st.file_uploader("Recipe file (JSON)", type=["json"], key=K + "upload",
                              help=f"A recipe downloaded from the Export page (or a JSON list of steps), at most "
                                   f"{MAX_RECIPE_BYTES // 1000:,} kB")
        if up is not None:
            try:
                recipe = read_recipe_file(up.getvalue())
            except RecipeError as e:
                st.error(f"{up.name}: {e}", icon=":material/error:")
            else:
                st.success(f"{up.name}: {len(recipe)} step{'s' if len(recipe) != 1 else ''}: "
                           + " → ".join(s["step"] for s in recipe), icon=":material/check_circle:")
                _plan_and_start(ws, recipe, K + "upload-", "Replay the uploaded recipe")
    show_jobs(_replay_jobs, key=K + "jobs", curves=False, log=False, extra=_comparison)

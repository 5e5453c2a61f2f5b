"""In a real browser: a training job started on the Model page keeps running through a reload,
is seen from a second session and finishes into a selectable variant; a killed worker is reported
with its reason; a running job is cancelled from the page."""
from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from e2e_helpers import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e


def start_training(page, name: str, *, epochs: int, subset: int, batch: int) -> None:
    """Fill the Model page's 'Train a new baseline' form and submit it."""
    page.get_by_role("tab", name="Train a new baseline").click()
    page.get_by_role("spinbutton", name="Epochs").fill(str(epochs))
    page.get_by_role("spinbutton", name="Training samples (0 = all)").fill(str(subset))
    page.get_by_role("spinbutton", name="Batch size").fill(str(batch))
    page.get_by_role("textbox", name="Name (optional)").first.fill(name)
    page.get_by_role("button", name="Start training").click()


def job_named(ws, name: str):
    return next((j for j in ws.jobs.list() if j.config.get("name") == name), None)


def card(page, job_id: str):
    """The job's card (a container keyed `<view>-card-<job id>`, which Streamlit exposes as a CSS class)."""
    return page.locator(f'[class*="-card-{job_id}"]').first


def badge(page, job_id: str):
    """The state badge of a job's card (its text is the state, after a material icon name)."""
    return card(page, job_id).locator(".stMarkdownBadge").first


def progress_text(page, job_id: str) -> str:
    bar = card(page, job_id).get_by_test_id("stProgress")
    return bar.inner_text() if bar.count() else ""


def test_training_job_survives_reload_is_shared_and_finishes_into_a_selectable_variant(new_page, e2e_workspace,
                                                                                     settle):
    name = f"e2e lenet5-small {uuid.uuid4().hex[:6]}"
    page = new_page("/model")
    page.get_by_role("tab", name="Train a new baseline").click()
    page.get_by_test_id("stSelectbox").filter(has_text="Model").click()
    page.get_by_role("option", name="lenet5-small").click()
    # 750 optimizer steps: long enough that the card's progress is seen moving on a fast machine too
    # (80 steps ended within one poll of the first progress reading on CI)
    start_training(page, name, epochs=3, subset=4000, batch=16)
    job = wait_for(lambda: job_named(e2e_workspace, name), 15, "the job to be created")
    expect(page.get_by_text("Training runs")).to_be_visible()
    expect(card(page, job.id)).to_be_visible()

    # progress moves: the live card reaches the training loop and its percentage grows (the first worker of a
    # fresh CI machine imports torch and reads the dataset from a cold disk: allow it minutes, not seconds)
    wait_for(lambda: "train: epoch" in progress_text(page, job.id), 240, "the card to show training progress")
    first = progress_text(page, job.id)
    wait_for(lambda: progress_text(page, job.id) not in ("", first), 60, "the progress to move")

    # a reload (a new session) still shows the running job
    page.reload()
    settle(page)
    expect(card(page, job.id)).to_be_visible()
    assert e2e_workspace.jobs.get(job.id).state in ("running", "done")

    # a second browser context sees the same job on the Jobs page
    other = new_page("/jobs")
    expect(card(other, job.id)).to_be_visible()
    expect(card(other, job.id).get_by_text(name, exact=False).first).to_be_visible()

    # it finishes (no interaction needed: the fragment polls), and its variant becomes selectable
    expect(badge(page, job.id)).to_contain_text("done", timeout=120_000)
    done = e2e_workspace.jobs.get(job.id)
    assert done.state == "done" and done.variant_id
    variant = e2e_workspace.get_variant(done.variant_id)
    assert variant.name == name
    page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
    page.get_by_role("option", name=variant.name, exact=False).click()
    settle(page)
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    assert f"variant={variant.id}" in page.url
    # the second session's Jobs page offers the produced variant too
    expect(card(other, job.id).get_by_role("button", name=f"Open variant {name}")).to_be_visible(timeout=30_000)


def test_a_killed_worker_is_reported_and_a_running_job_can_be_cancelled(new_page, e2e_workspace, settle):
    tag = uuid.uuid4().hex[:6]
    page = new_page("/model")
    # two long jobs: with one job at a time the second waits in the queue
    start_training(page, f"e2e doomed {tag}", epochs=100, subset=1000, batch=16)
    doomed = wait_for(lambda: job_named(e2e_workspace, f"e2e doomed {tag}"), 15, "the first job")
    settle(page)
    start_training(page, f"e2e cancelled {tag}", epochs=100, subset=1000, batch=16)
    victim = wait_for(lambda: job_named(e2e_workspace, f"e2e cancelled {tag}"), 15, "the second job")
    expect(badge(page, victim.id)).to_contain_text("queued")

    # kill -9 the first worker: the page reports it within a few seconds, and the queue moves on
    wait_for(lambda: e2e_workspace.jobs.get(doomed.id).message not in ("", "starting worker"), 60,
             "the first worker to start")
    pid = e2e_workspace.jobs.get(doomed.id).pid
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    expect(card(page, doomed.id).get_by_text("killed by signal 9")).to_be_visible(timeout=15_000)
    assert time.time() - t0 < 10
    assert e2e_workspace.jobs.get(doomed.id).state == "failed"

    # the second job starts by itself; Cancel on its card stops it
    wait_for(lambda: "train: epoch" in progress_text(page, victim.id), 240, "the second job to train")
    card(page, victim.id).get_by_role("button", name="Cancel").click()
    expect(badge(page, victim.id)).to_contain_text("cancelled", timeout=15_000)
    job = e2e_workspace.jobs.get(victim.id)
    assert job.state == "cancelled" and job.variant_id is None
    assert not any(v.name.endswith(tag) for v in e2e_workspace.list_variants())
    # the app keeps working: the Jobs page lists both with their states
    jobs_page = new_page("/jobs")
    expect(badge(jobs_page, doomed.id)).to_contain_text("failed")
    expect(badge(jobs_page, victim.id)).to_contain_text("cancelled")

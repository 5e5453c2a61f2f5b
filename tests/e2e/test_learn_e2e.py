"""In a real browser, as a lecturer would: open a lesson by its permanent URL in presenter mode, move
its control and see the numbers and the chart change, reopen the same view from the URL, answer
its question, then press "Try it in the workbench" and land on the Prune page with the lesson's
settings in its widgets."""
from __future__ import annotations

import time

import pytest
from e2e_helpers import metric_value, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

LESSON = "which-weights-go"
PLOT_TITLES = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .map(p => ((p.layout || {}).title || {}).text || '')"""


def slider_value(page, label: str) -> float:
    slider = page.get_by_test_id("stSlider").filter(has_text=label).first
    return float(slider.get_by_test_id("stSliderThumbValue").inner_text())


def test_lesson_in_presenter_mode_control_check_and_workbench(new_page, settle, lenet5_variant, e2e_workspace):
    assert lenet5_variant.id == "base-lenet5", "the lessons run on the shipped baseline base-lenet5"
    page = new_page(f"/learn?lesson={LESSON}&present=1")
    page.set_viewport_size({"width": 1280, "height": 720})     # a projector
    expect(page.get_by_role("heading", name="1. Which weights go")).to_be_visible(timeout=60_000)
    # presenter mode: the sidebar starts collapsed and the type is larger
    expect(page.get_by_test_id("stSidebar")).to_have_attribute("data-collapsed", "true")
    wait_for(lambda: page.evaluate("() => getComputedStyle(document.documentElement).fontSize") == "20px", 30,
             "the presenter style (20 px type)")

    page.get_by_role("button", name="Next: Experiment").click()
    settle(page)
    wait_for(lambda: "step=experiment" in page.url, 30, "the step in the URL")
    expect(page.get_by_test_id("stMetric").filter(has_text="Sparsity of fc1")).to_be_visible(timeout=60_000)
    assert metric_value(page, "Sparsity of fc1") == "50.0%"
    accuracy_50 = metric_value(page, "Val. accuracy")
    titles = wait_for(lambda: page.evaluate(PLOT_TITLES), 30, "the figures to draw")
    assert any("50%" in t for t in titles), titles

    # the slider moves in steps of 0.01: 0.50 -> 0.95
    thumb = page.get_by_test_id("stSlider").filter(has_text="Fraction of the layer").first.get_by_role("slider")
    thumb.focus()
    for _ in range(45):
        thumb.press("ArrowRight")
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Sparsity of fc1")).to_contain_text("95.0%",
                                                                                              timeout=60_000)
    assert metric_value(page, "Val. accuracy") != accuracy_50
    wait_for(lambda: any("95%" in t for t in page.evaluate(PLOT_TITLES)), 30, "the heatmap title to follow")
    wait_for(lambda: f"{LESSON}.amount=0.95" in page.url, 30, "the control's value in the URL")
    lesson_url = page.url

    # the URL reproduces the view in a new session: same step, same slider value
    again = new_page("/" + lesson_url.split("/", 3)[3])
    expect(again.get_by_test_id("stMetric").filter(has_text="Sparsity of fc1")).to_contain_text("95.0%",
                                                                                               timeout=60_000)
    assert slider_value(again, "Fraction of the layer") == pytest.approx(0.95)
    again.context.close()

    # the check: a wrong answer first, then the right one
    page.get_by_text("5 · Check").click()
    settle(page)
    wait_for(lambda: "step=check" in page.url, 30, "the check step in the URL")
    page.get_by_text("fc1: it loses 360,000 weights").click()
    page.get_by_role("button", name="Check my answer").click()
    settle(page)
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text("Not quite")
    page.get_by_text("conv1: with only 500 weights").click()
    page.get_by_role("button", name="Check my answer").click()
    settle(page)
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("fc1 is heavily over-parameterised")

    # back to the experiment (the 0.95 setting is kept) and into the real Prune page
    page.get_by_text("2 · Experiment").click()
    settle(page)
    expect(page.get_by_test_id("stMetric").filter(has_text="Sparsity of fc1")).to_contain_text("95.0%")
    page.get_by_role("button", name="Try it in the workbench").click()
    settle(page)
    expect(page.get_by_role("heading", name="Prune", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_role("heading", name="Prune", exact=True)).to_be_in_viewport()   # opened at its top
    wait_for(lambda: "/prune" in page.url and "present=1" in page.url and "variant=base-lenet5" in page.url, 30,
             "the Prune page's URL, in presenter mode, on base-lenet5")
    # the lesson's settings in the Prune page's own widgets: L1, per layer, fc1 alone at 0.95
    method = page.get_by_test_id("stRadio").filter(has_text="Method").first
    expect(method.get_by_role("radio", name="L1 magnitude")).to_be_checked()
    scope = page.get_by_test_id("stRadio").filter(has_text="Scope").first
    expect(scope.get_by_role("radio", name="Per layer (same amount each)")).to_be_checked()
    assert slider_value(page, "Amount") == 0.0
    assert slider_value(page, "fc1") == pytest.approx(0.95)
    expect(page.get_by_text("Per-layer amounts (override the amount for chosen layers): 1 set")).to_be_visible()
    time.sleep(0.5)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_moving_between_lessons_keeps_presenter_mode(new_page, settle, lenet5_variant):
    page = new_page(f"/learn?lesson={LESSON}&present=1&step=why")
    expect(page.get_by_role("heading", name="1. Which weights go")).to_be_visible(timeout=60_000)
    page.get_by_test_id("stPageLink").filter(has_text="Next: Why 90% sparse is not faster").click()
    settle(page)
    expect(page.get_by_role("heading", name="2. Why 90% sparse is not faster")).to_be_visible(timeout=60_000)
    wait_for(lambda: "lesson=sparse-is-not-faster" in page.url and "present=1" in page.url, 30,
             "the next lesson's URL in presenter mode")
    assert "step=" not in page.url                 # a new lesson starts at its idea
    expect(page.get_by_role("button", name="Next: Experiment")).to_be_visible()
    assert page.evaluate("() => getComputedStyle(document.documentElement).fontSize") == "20px"
    # a presenter remote: PageDown is the next step, PageUp the one before
    page.get_by_role("heading", name="2. Why 90% sparse is not faster").click()
    page.keyboard.press("PageDown")
    settle(page)
    wait_for(lambda: "step=experiment" in page.url, 30, "PageDown to open the experiment step")
    expect(page.get_by_role("button", name="Back: Idea")).to_be_visible(timeout=60_000)
    page.get_by_role("heading", name="2. Why 90% sparse is not faster").click()
    page.keyboard.press("PageUp")
    settle(page)
    wait_for(lambda: "step=" not in page.url, 30, "PageUp to go back to the idea")
    page.get_by_test_id("stPageLink").filter(has_text="Leave presenter mode").click()
    settle(page)
    wait_for(lambda: "lesson=sparse-is-not-faster" in page.url and "present" not in page.url, 30,
             "the lesson's URL without presenter mode")
    wait_for(lambda: page.evaluate("() => getComputedStyle(document.documentElement).fontSize") == "16px", 30,
             "the normal type size")

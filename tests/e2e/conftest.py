"""Real-browser fixtures: the app served by `streamlit run app.py` on 127.0.0.1 (a free port, a
temp workspace) and Debian's Chromium driven by Playwright. Reusable by every e2e test module:

    pytestmark = pytest.mark.e2e

    def test_something(app_url, new_page, e2e_workspace):
        page = new_page("/model")          # a fresh browser context (= a new session), settled
        ...

Never runs `playwright install`: the browser is /usr/bin/chromium (apt-get install chromium).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok"
    except OSError:
        return False


@pytest.fixture(scope="session")
def e2e_home(tmp_path_factory) -> Path:
    """The server's WORKBENCH_HOME: a fresh workspace (seeded with the shipped baselines, if any)."""
    return tmp_path_factory.mktemp("e2e-workspace")


@pytest.fixture(scope="session")
def app_url(e2e_home):
    """Base URL of a running app (started once per test session, stopped at the end)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_HOME": str(e2e_home), "WORKBENCH_MAX_JOBS": "1", "PYTHONUNBUFFERED": "1"}
    log_path = e2e_home.parent / f"streamlit-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    end = time.time() + 90
    while not _healthy(url):
        if proc.poll() is not None or time.time() > end:
            proc.kill()
            log.close()
            raise RuntimeError(f"streamlit did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture(scope="session")
def e2e_workspace(app_url, e2e_home):
    """The server's workspace, opened from the test process (jobs and variants are shared state)."""
    from core.store.workspace import Workspace

    ws = Workspace(e2e_home)
    yield ws
    from core.run import jobs

    for job in ws.jobs.list(states=("queued", "running")):  # leave no worker behind
        jobs.cancel(ws, job.id, grace_s=1.0)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the app has rendered and its script is not running."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stMainBlockContainer"]', timeout=timeout_ms)
    time.sleep(0.5)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)


@pytest.fixture
def new_page(browser, app_url):
    """new_page(path) -> a Playwright page in a fresh browser context (its own Streamlit session)."""
    contexts = []

    def make(path: str = "/"):
        ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(30_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(app_url + path)
        _settle(page)
        return page

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def settle():
    """settle(page): wait until the app has rendered and its script is not running."""
    return _settle


@pytest.fixture(scope="module")
def lenet5_variant(e2e_workspace):
    """The shipped LeNet-5 baseline when the workspace has it, else a small trained one."""
    import dataclasses

    import torch

    from core.data.datasets import cached_dataset
    from core.measure.training import TrainConfig, train_
    from core.models.registry import create_model
    from core.store.variants import base_arch, measure_and_store
    from core.store.workspace import VariantNotFound

    try:
        return e2e_workspace.get_variant("base-lenet5")
    except VariantNotFound:
        pass
    data = cached_dataset("fashion-mnist")
    small = dataclasses.replace(data, train=data.train.subset(1000), val=data.val.subset(200),
                                test=data.test.subset(500))
    torch.manual_seed(0)
    model = create_model("lenet5")
    train_(model, small, TrainConfig(epochs=1, device="cpu"))
    return measure_and_store(e2e_workspace, model, data=small, name="e2e lenet5", arch=base_arch("lenet5", small),
                             recipe=[{"step": "train"}], device="cpu")

"""AppTest: a damaged or emptied index is a page that says how to recover, with the repair one
click away; variants are deleted from the Model page with the reasons that stop it."""
from __future__ import annotations

from pathlib import Path

import pytest
from hostile_helpers import fill_the_disk

from core.models.registry import create_model
from core.store.workspace import Workspace

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 90
ARCH = {"name": "lenet300", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "edits": {}}
METRICS = {"accuracy": 0.5, "params": 266_610, "nonzero_params": 266_610, "latency_ms_b1": 0.1, "latency_ms_b64": 1.0,
           "macs": 266_200, "device": "cpu: x86_64, 2 threads", "dense_size_bytes": 1_066_000}


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _workspace(root: Path) -> Workspace:
    ws = Workspace(root, seed_baselines=False)
    a = ws.add_variant(create_model("lenet300"), name="root net", dataset="fashion-mnist", arch=ARCH,
                       recipe=[{"step": "train"}], metrics=METRICS, variant_id="aaaa1111")
    ws.add_variant(create_model("lenet300"), name="child net", dataset="fashion-mnist", arch=ARCH,
                   recipe=[{"step": "train"}, {"step": "prune"}], metrics=METRICS, parent_id=a.id,
                   variant_id="bbbb2222")
    return ws


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    monkeypatch.setattr(Workspace, "seed_baselines", lambda self, *a, **k: [])
    import streamlit as st

    st.cache_resource.clear()
    yield root
    st.cache_resource.clear()


def _app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def test_a_damaged_index_is_a_recovery_page_and_repair_brings_the_variants_back(home):
    _workspace(home)
    db = home / "workbench.db"
    for extra in ("workbench.db-wal", "workbench.db-shm"):
        (home / extra).unlink(missing_ok=True)
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "The workspace cannot be opened"
    assert "is damaged" in texts(at.error) and str(db) in texts(at.error)
    at.button(key="recovery-repair").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Compression Workbench"
    assert {v.id for v in Workspace(home, seed_baselines=False).list_variants()} == {"aaaa1111", "bbbb2222"}
    assert Workspace(home, seed_baselines=False).get_variant("bbbb2222").parent_id == "aaaa1111"


def test_an_emptied_index_is_never_silent(home):
    _workspace(home)
    for extra in ("workbench.db-wal", "workbench.db-shm"):
        (home / extra).unlink(missing_ok=True)
    (home / "workbench.db").write_bytes(b"")          # zero bytes: SQLite would quietly start afresh
    at = _app().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "2 variant(s) are on disk but missing from the workspace index" in texts(at.warning)
    at.button(key="recovery-banner-repair").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning or "missing from the workspace index" not in texts(at.warning)
    assert len(Workspace(home, seed_baselines=False).list_variants()) == 2


def test_delete_from_the_model_page_says_what_stops_it(home):
    ws = _workspace(home)
    at = _app()
    at.query_params["variant"] = "aaaa1111"
    at.run().switch_page("pages/model.py").run()
    assert not at.exception, [e.value for e in at.exception]
    # a job that uses the variant stops the delete, and the message names it
    job = ws.jobs.create("prune", {"variant": "aaaa1111", "prune": {"amount": 0.5}}, "Prune root net: L1 layer 50%")
    at.radio(key="model-manage-how").set_value("cascade")
    at.checkbox(key="model-manage-sure").check().run()
    at.button(key="model-manage-delete").click().run()
    assert "Not deleted" in texts(at.error) and job.id in texts(at.error)
    assert len(ws.list_variants()) == 2
    ws.jobs.update(job.id, state="cancelled")
    at.checkbox(key="model-manage-sure").check().run()
    at.button(key="model-manage-delete").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert ws.list_variants() == [] and "Deleted aaaa1111, bbbb2222" in texts(at.success)


def test_pages_that_only_read_work_on_a_full_disk_and_writers_say_so(home, monkeypatch):


    _workspace(home)

    fill_the_disk(monkeypatch)
    at = _app()
    at.query_params["variant"] = "aaaa1111"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    for page in ("pages/model.py", "pages/jobs.py", "pages/prune.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
    at.button(key="prune-apply").click().run()          # a writer: one clear error box
    assert not at.exception, [e.value for e in at.exception]
    assert "Not saved" in texts(at.error) and "is full" in texts(at.error)

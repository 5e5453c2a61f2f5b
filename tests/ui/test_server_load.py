"""What keeps a shared server live: per-run work that does not grow with what is imported or
how many sessions look at the same workspace."""
from __future__ import annotations

import gc


def test_imported_modules_are_out_of_the_collection_after_every_run():
    """Streamlit collects garbage after every script run; the modules the pages import (torch,
    plotly, pandas: about 275,000 objects, 0.13 s a run) are frozen out of that walk."""
    import plotly.graph_objects as go
    import torch.nn.modules.conv as conv

    from ui import resources

    resources.freeze_imported_objects()      # once per process: app.py calls it before the first page runs
    assert gc.get_freeze_count() > 100_000
    walked = {id(o) for o in gc.get_objects()}
    assert id(vars(go)) not in walked and id(vars(conv)) not in walked


# ---------------------------------------------------------------- the index, read once per change

def test_variants_are_read_once_per_change_and_see_other_processes_writes(workspace, monkeypatch):
    import streamlit as st

    from core.store.workspace import Workspace
    from ui import resources

    st.cache_resource.clear()
    reads = []
    list_variants = Workspace.list_variants
    monkeypatch.setattr(Workspace, "list_variants", lambda self, *a, **k: reads.append(1) or list_variants(self, *a, **k))
    shipped = resources.variants()           # the app's workspace is seeded with the shipped baselines
    other = Workspace(workspace.root, seed_baselines=False)      # another connection (as another process)
    reads.clear()
    for _ in range(5):                       # every session and every rerun asks; one read serves them
        assert resources.variants() == shipped
    assert len(reads) == 0
    import torch.nn as nn

    other.add_variant(nn.Linear(2, 2), name="a", dataset="fashion-mnist", arch={"name": "x"}, recipe=[], metrics={},
                      variant_id="aaaa1111")
    assert [v.id for v in resources.variants()] == [*(v.id for v in shipped), "aaaa1111"] and len(reads) == 1
    other.add_variant(nn.Linear(2, 2), name="b", dataset="fashion-mnist", arch={"name": "x"}, recipe=[], metrics={},
                      variant_id="bbbb2222", parent_id="aaaa1111")
    assert [v.id for v in resources.lineage("bbbb2222")] == ["aaaa1111", "bbbb2222"]
    assert [v.id for v in resources.children("aaaa1111")] == ["bbbb2222"]
    assert resources.variant("bbbb2222").parent_id == "aaaa1111" and resources.variant("nope") is None
    other.delete_variant("bbbb2222")
    assert resources.variant("bbbb2222") is None
    st.cache_resource.clear()


def test_job_lists_follow_state_changes_and_a_replaced_database(workspace):
    import streamlit as st

    from ui import resources

    st.cache_resource.clear()
    job = workspace.jobs.create("train", {"model": "lenet5"}, "t")
    assert [j.id for j in resources.job_list(states=("queued",))] == [job.id]
    workspace.jobs.update(job.id, state="cancelled")
    assert resources.job_list(states=("queued",)) == () and resources.job_list()[0].state == "cancelled"
    # a database replaced on disk (what a repair does) is a new index, not a stale cached one
    db = workspace.db_path
    for extra in ("-wal", "-shm"):
        db.with_name(db.name + extra).unlink(missing_ok=True)
    db.unlink()
    from core.store.workspace import Workspace

    fresh = Workspace(workspace.root, seed_baselines=False)
    assert resources.job_list() == () and fresh.jobs.list() == []
    st.cache_resource.clear()


def test_job_events_are_read_incrementally_and_shared(workspace, monkeypatch):
    import streamlit as st

    from core.store.jobstore import JobStore
    from ui import resources

    st.cache_resource.clear()
    job = workspace.jobs.create("train", {"model": "lenet5"}, "t")
    workspace.jobs.add_events(job.id, [{"kind": "batch_end", "i": i} for i in range(3)])
    asked = []
    events = JobStore.events
    monkeypatch.setattr(JobStore, "events", lambda self, jid, after_seq=0: asked.append(after_seq) or
                        events(self, jid, after_seq))
    assert [e["i"] for e in resources.job_events(job.id)] == [0, 1, 2]
    workspace.jobs.add_events(job.id, [{"kind": "batch_end", "i": 3}])
    first = resources.job_events(job.id)
    assert [e["i"] for e in first] == [0, 1, 2, 3] and asked == [0, 3]    # only the new one was read
    assert resources.job_events(job.id) == first and isinstance(first, tuple)
    st.cache_resource.clear()


def test_a_figure_is_built_once_per_key_and_shared():
    import streamlit as st

    from ui import resources

    st.cache_resource.clear()
    built = []
    make = lambda: built.append(1) or object()   # noqa: E731
    a = resources.figure(("bars", "v1", 1.0, {"amount": 0.5}), make)
    assert resources.figure(("bars", "v1", 1.0, {"amount": 0.5}), make) is a and len(built) == 1
    assert resources.figure(("bars", "v1", 1.0, {"amount": 0.6}), make) is not a and len(built) == 2
    st.cache_resource.clear()


def test_previews_run_one_per_slot_and_the_same_settings_are_computed_once(workspace, monkeypatch):
    import threading
    import time

    import streamlit as st

    import core.tasks.prune
    from core.compress.pruning.prune import PruneConfig
    from ui import resources

    st.cache_resource.clear()
    running, most, calls = [0], [0], []
    guard = threading.Lock()

    def slow_preview(ws, variant, model, config, val):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
            calls.append(config.amount)
        time.sleep(0.2)
        with guard:
            running[0] -= 1
        return ("preview", config.amount)

    monkeypatch.setattr(core.tasks.prune, "preview_child", slow_preview)
    monkeypatch.setattr(resources, "model", lambda v: None)
    monkeypatch.setattr(resources, "val_subset", lambda name: None)
    monkeypatch.setattr(resources, "PREVIEW_SLOTS", threading.BoundedSemaphore(2))
    v = resources.variant("base-lenet5")
    amounts = [0.9] * 4 + [0.1, 0.2, 0.3, 0.4]       # four sessions ask the same, four others each their own
    out = {}
    threads = [threading.Thread(target=lambda i, a: out.__setitem__(i, resources.prune_preview(v, PruneConfig(amount=a))),
                                args=(i, a)) for i, a in enumerate(amounts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [0.1, 0.2, 0.3, 0.4, 0.9] and most[0] == 2
    assert all(out[i] == ("preview", a) for i, a in enumerate(amounts))
    st.cache_resource.clear()

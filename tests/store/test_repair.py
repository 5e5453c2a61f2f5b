"""The database is never silently lost: a damaged, emptied or foreign index is reported with how
to recover; `check` finds what is wrong and `repair` rebuilds the index from the variant files,
lineage and metrics included; deleted shipped baselines stay deleted until restored; a full disk
still lets people read."""
from __future__ import annotations

import sqlite3

import pytest
from hostile_helpers import fill_the_disk

from core.cli.main import main
from core.store import workspace as workspace_mod
from core.store.repair import check, repair
from core.store.workspace import Workspace, WorkspaceError
from core.tasks import TaskContext, run_task


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """A workspace with a trained root, a pruned child and a prune-and-recovered grandchild,
    measured for real (lenet5-small on a subset, so it is quick)."""
    root = tmp_path_factory.mktemp("family")
    ws = Workspace(root, seed_baselines=False)
    ctx = TaskContext(ws)
    base = run_task("train", {"model": "lenet5-small", "subset": 512, "name": "small",
                              "train": {"epochs": 1, "device": "cpu"}}, ctx).variant_id
    pruned = run_task("prune", {"variant": base, "prune": {"amount": 0.6, "scope": "global"}, "device": "cpu"},
                      ctx).variant_id
    recovered = run_task("prune_recover", {"variant": pruned, "prune": {"amount": 0.8, "scope": "global"}, "steps": 1,
                                           "subset": 256, "device": "cpu",
                                           "finetune": {"epochs": 1, "device": "cpu"}}, ctx).variant_id
    return root, {v.id: v for v in ws.list_variants()}, (base, pruned, recovered)


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _assert_all_back(root, before):
    ws = Workspace(root, seed_baselines=False)
    after = {v.id: v for v in ws.list_variants()}
    assert set(after) == set(before)
    for vid, v in before.items():
        a = after[vid]
        assert (a.name, a.parent_id, a.dataset, a.recipe, a.kind, a.format) == \
               (v.name, v.parent_id, v.dataset, v.recipe, v.kind, v.format)
        assert a.metrics == v.metrics and a.created_at == v.created_at
    return ws


@pytest.mark.parametrize("damage", ["deleted", "zero bytes", "half truncated"])
def test_repair_brings_every_variant_back_with_metrics_and_lineage(family, tmp_path, damage, capsys):
    src, before, (base, pruned, recovered) = family
    root = _copy(src, tmp_path / "ws")
    db = root / "workbench.db"
    for extra in ("workbench.db-wal", "workbench.db-shm"):
        (root / extra).unlink(missing_ok=True)
    if damage == "deleted":
        db.unlink()
    elif damage == "zero bytes":
        db.write_bytes(b"")
    else:
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])

    rep = check(root)
    assert not rep.ok and sorted(rep.unindexed) == sorted(before)
    if damage == "half truncated":     # opening says what is wrong and how to recover: no traceback
        with pytest.raises(WorkspaceError, match="is damaged .*python -m core --workspace .* repair"):
            Workspace(root, seed_baselines=False)
        assert main(["--workspace", str(root), "variants"]) == 2
        assert "is damaged" in capsys.readouterr().err
    else:                              # an empty index is re-created, and the lost variants are reported
        assert Workspace(root, seed_baselines=False).list_variants() == []
        assert [p.name for p in Workspace(root, seed_baselines=False).unindexed()] == sorted(before)

    assert main(["--workspace", str(root), "check"]) == 1          # problems found
    assert "not in the index" in capsys.readouterr().out
    assert main(["--workspace", str(root), "repair"]) == 0
    out = capsys.readouterr().out
    assert f"re-indexed {len(before)} variant(s)" in out
    ws = _assert_all_back(root, before)
    assert [v.id for v in ws.lineage(recovered)] == [base, pruned, recovered]
    assert check(root).ok
    # measuring each again gives the very accuracy it had
    for vid in (base, pruned, recovered):
        again = run_task("measure", {"variant": vid, "device": "cpu"}, TaskContext(ws))
        assert ws.get_variant(again.variant_id).metrics["accuracy"] == before[vid].metrics["accuracy"]


def test_a_foreign_database_is_refused_and_left_alone(tmp_path, capsys):
    root = tmp_path / "other"
    root.mkdir()
    conn = sqlite3.connect(root / "workbench.db")
    conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    conn.commit()
    conn.close()
    with pytest.raises(WorkspaceError, match="not a Compression Workbench database"):
        Workspace(root)
    with pytest.raises(WorkspaceError, match="repair leaves it alone"):
        repair(root)
    assert main(["--workspace", str(root), "variants"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    conn = sqlite3.connect(root / "workbench.db")
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]   # untouched


def test_every_variant_file_carries_its_index_row(family):
    root, before, _ = family
    ws = Workspace(root, seed_baselines=False)
    for v in ws.list_variants():
        side = workspace_mod.variant_from_sidecar((ws.root / v.weights_file).parent.joinpath("variant.json").read_bytes())
        assert side == v
    # a metrics update reaches the file too
    v = ws.list_variants()[0]
    ws.update_variant(v.id, metrics={"note_for_test": 1})
    side = workspace_mod.variant_from_sidecar((ws.root / v.weights_file).parent.joinpath("variant.json").read_bytes())
    assert side.metrics["note_for_test"] == 1


def test_deleted_shipped_baselines_stay_deleted_until_restored(tmp_path, capsys):
    ws = Workspace(tmp_path / "ws")
    shipped = {v.id for v in ws.list_variants()}
    assert "base-lenet5" in shipped
    ws.delete_variant("base-lenet5")
    assert "base-lenet5" not in {v.id for v in Workspace(tmp_path / "ws").list_variants()}   # not back on open
    assert main(["--workspace", str(tmp_path / "ws"), "restore-baselines"]) == 0
    assert "restored base-lenet5" in capsys.readouterr().out
    assert {v.id for v in Workspace(tmp_path / "ws").list_variants()} == shipped


def test_a_full_disk_still_lets_people_read_and_writers_say_so(family, tmp_path, monkeypatch, capsys):
    src, before, (base, _, _) = family
    root = _copy(src, tmp_path / "ws")

    fill_the_disk(monkeypatch)
    assert main(["--workspace", str(root), "--json", "variants"]) == 0
    assert len(capsys.readouterr().out.strip()) > 10
    assert main(["--workspace", str(root), "jobs"]) == 0
    capsys.readouterr()
    assert main(["--workspace", str(root), "prune", base, "--amount", "0.5", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is full" in err and err.count("\n") == 1

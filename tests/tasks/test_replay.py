"""Recipe replay (core.tasks.recipe_replay, the `replay` task and CLI): a pruned-and-recovered variant made by a
small recipe is made again from its recipe with the same parameters and non-zeros and the same
accuracy (within 0.5 points); the root is reused when a variant was made by exactly the first step
and trained again with reuse_root=False; steps that cannot be replayed are refused, naming the
step, before anything runs."""
from __future__ import annotations

import json

import pytest

from core.cli.main import main
from core.tasks import TaskContext, run_task
from core.tasks.recipe_replay import RecipeError, check_recipe, find_root, normalized_recipe, parse_recipe, preflight, replay
from core.tasks.replay import ReplayJobConfig

TRAIN = {"model": "lenet5", "subset": 1000, "train": {"epochs": 1, "device": "cpu"}}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A root trained on 1,000 samples for one epoch and its child pruned to 80% in 2 AGP steps,
    one fine-tuning epoch on 1,000 samples after each."""
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("replay-ws"), seed_baselines=False)
    ctx = TaskContext(ws)
    root = run_task("train", TRAIN, ctx).variant_id
    child = run_task("prune_recover", {"variant": root, "prune": {"amount": 0.8, "scope": "global"}, "steps": 2,
                                       "subset": 1000, "finetune": {"epochs": 1, "device": "cpu"}}, ctx).variant_id
    return ws, ws.get_variant(root), ws.get_variant(child)


def test_replaying_a_pruned_and_recovered_variant_makes_it_again(made):
    ws, root, original = made
    assert [s["step"] for s in original.recipe] == ["train", "prune_recover"]
    progress = []
    v = replay(ws, original.recipe, on_progress=lambda p, msg: progress.append((p, msg)))
    assert v.id != original.id
    assert v.parent_id == root.id                          # the root made by exactly step 1 was reused
    assert abs(v.metrics["accuracy"] - original.metrics["accuracy"]) <= 0.005, (v.metrics["accuracy"],
                                                                                original.metrics["accuracy"])
    assert v.metrics["params"] == original.metrics["params"]
    assert v.metrics["nonzero_params"] == original.metrics["nonzero_params"]
    assert v.metrics["nonzero_params"] < 0.25 * v.metrics["params"]
    assert v.kind == original.kind
    assert normalized_recipe(v.recipe) == normalized_recipe(original.recipe)
    values = [p for p, _ in progress]
    assert values == sorted(values) and values[-1] == pytest.approx(1.0)
    assert any(msg.startswith("step 2/2 (prune_recover)") for _, msg in progress)


def test_replaying_deep_compression_steps_gives_the_same_codes_and_bytes(made):
    """Weight sharing (seeded k-means, centroids fine-tuned) and Huffman coding replay too: the
    replayed file has the same size and the model the same accuracy."""
    ws, _, pruned = made
    ctx = TaskContext(ws)
    shared = run_task("share_weights", {"variant": pruned.id, "bits_conv": 5, "bits_fc": 4, "epochs": 1,
                                        "subset": 500, "device": "cpu"}, ctx).variant_id
    coded = ws.get_variant(run_task("entropy_code", {"variant": shared, "device": "cpu"}, ctx).variant_id)
    assert [s["step"] for s in coded.recipe] == ["train", "prune_recover", "share_weights", "entropy_code"]
    check_recipe(coded.recipe)              # accepted: raises RecipeError for a step replay cannot make
    v = replay(ws, coded.recipe)
    assert v.id != coded.id and v.format == "shared+huffman"
    assert abs(v.metrics["accuracy"] - coded.metrics["accuracy"]) <= 0.005
    assert v.metrics["nonzero_params"] == coded.metrics["nonzero_params"]
    assert abs(v.metrics["size_bytes"] - coded.metrics["size_bytes"]) <= 0.02 * coded.metrics["size_bytes"]


def test_without_reuse_the_root_is_trained_again_to_the_same_weights(made):
    ws, root, _ = made
    assert find_root(ws, root.recipe[0]).id == root.id
    v = replay(ws, root.recipe, reuse_root=False, name="retrained root")
    assert v.id != root.id and v.parent_id is None and v.name == "retrained root"
    assert v.metrics["accuracy"] == pytest.approx(root.metrics["accuracy"], abs=0.005)
    assert v.metrics["params"] == root.metrics["params"]


def test_the_cli_replays_a_recipe_file_and_compares_with_the_original(made, tmp_path, capsys):
    ws, root, _ = made
    step = {"step": "prune", "method": "l1", "amount": 0.5, "scope": "global"}
    settings = {k: v for k, v in step.items() if k != "step"}
    original = ws.get_variant(run_task("prune", {"variant": root.id, "prune": settings}, TaskContext(ws)).variant_id)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(original.recipe))
    assert main(["--workspace", str(ws.root), "--json", "replay", str(path)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["id"] != original.id and out["parent_id"] == root.id
    assert out["replay"]["steps"][0]["reused"] is True and out["replay"]["steps"][1]["step"] == "prune"
    assert out["replay"]["originals"][0]["id"] == original.id
    assert out["replay"]["accuracy_delta_points"] == pytest.approx(0.0, abs=0.5)
    assert out["nonzero_params"] == original.metrics["nonzero_params"]
    # a variant record (what variant.json holds) is read as its recipe
    assert parse_recipe(json.dumps({"id": original.id, "recipe": original.recipe})) == original.recipe


@pytest.mark.parametrize("content, match", [
    ("not json", "not valid JSON"),
    ('{"a": 1}', "a JSON list of step objects"),
    ("[]", "the recipe is empty"),
    ('[{"step": "train", "model": "lenet5"}, {"step": "magic"}]', r"step 2 \(magic\) cannot be replayed: unknown step"),
    ('[{"step": "prune", "amount": 0.5}]', r"step 1 \(prune\) cannot be replayed as a first step"),
    ('[{"step": "train", "model": "lenet5"}, {"step": "train", "model": "lenet5"}]',
     r"step 2 \(train\) cannot be replayed as a later step"),
    ('[{"step": "train", "model": "no-such-model"}]', r"step 1 \(train\) cannot be replayed: .*no-such-model"),
    ('[{"step": "train", "model": "lenet5"}, {"step": "prune", "amount": 2}]', r"step 2 \(prune\) cannot be replayed: amount"),
    ('[{"step": "train", "model": "lenet5"}, 3]', r"step 2 is not an object"),
    ('[{"model": "lenet5"}]', r'step 1 has no "step" name'),
])
def test_bad_recipes_are_refused_naming_the_step(content, match, tmp_path, workspace, capsys):
    with pytest.raises(RecipeError, match=match):
        parse_recipe(content)
    path = tmp_path / "r.json"
    path.write_text(content)
    assert main(["--workspace", str(workspace.root), "replay", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and len([line for line in err if line.startswith("error:")]) == 1
    assert made_here(workspace) == []


def test_an_unknown_step_is_refused_as_a_job_and_nothing_is_queued(workspace):
    from core.run import jobs

    with pytest.raises(ValueError, match=r"step 2 \(sensitivity\) cannot be replayed"):
        jobs.submit(workspace, "replay", {"recipe": [{"step": "train", "model": "lenet5"}, {"step": "sensitivity"}]})
    assert workspace.jobs.list() == []
    cfg = ReplayJobConfig(recipe=[{"step": "train", **TRAIN}])
    assert cfg.describe(str) == "Replay a recipe: train"
    assert ReplayJobConfig.from_dict(cfg.to_dict()) == cfg


def test_missing_teacher_or_upload_is_refused_before_anything_runs(workspace, tmp_path):
    distill = [{"step": "distill", "teacher": "gone1234", "student": "lenet5-small", "model": "lenet5-small",
                "dataset": "fashion-mnist", "ablation": False, "subset": 100, "distill": {"epochs": 1}}]
    check_recipe(distill)   # well formed ...
    with pytest.raises(RecipeError, match=r"step 1 \(distill\) cannot be replayed: its teacher 'gone1234' is not"):
        preflight(workspace, distill)   # ... but its teacher is not here
    upload = [{"step": "upload", "filename": "mine.safetensors", "sha256": "ab" * 32, "model": "lenet5",
               "dataset": "fashion-mnist"}]
    with pytest.raises(RecipeError, match=r"step 1 \(upload\) cannot be replayed: the uploaded checkpoint mine"):
        replay(workspace, upload)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(upload))
    assert main(["--workspace", str(workspace.root), "replay", str(path)]) == 2
    assert made_here(workspace) == []


def made_here(ws) -> list:
    """Variants other than the shipped baselines (which the CLI seeds when it opens a workspace)."""
    return [v for v in ws.list_variants() if not (v.origin or "").startswith("baseline:")]


def test_the_cli_refuses_a_missing_or_huge_file(tmp_path, workspace, capsys):
    assert main(["--workspace", str(workspace.root), "replay", str(tmp_path / "none.json")]) == 2
    assert "no such recipe file" in capsys.readouterr().err
    big = tmp_path / "big.json"
    big.write_text("[" + " " * 1_100_000 + "]")
    assert main(["--workspace", str(workspace.root), "replay", str(big)]) == 2
    assert "at most 1,000,000 bytes" in capsys.readouterr().err


def test_a_transfer_whose_source_is_gone_is_replayed_from_the_source_recipe_or_refused(workspace):
    step = {"step": "transfer", "source": {"variant": "gone1234", "name": "old lenet", "dataset": "fashion-mnist"},
            "dataset": "digits", "freeze_backbone": True, "epochs": 1, "subset": 100}
    with pytest.raises(RecipeError, match=r"step 1 \(transfer\) cannot be replayed: its source old lenet is not"):
        preflight(workspace, [{**step, "source_recipe": []}])
    lines = preflight(workspace, [{**step, "source_recipe": [{"step": "train", **TRAIN}]}])
    assert lines == ["step 1 (transfer): transfer again from old lenet, whose own recipe is replayed first"]
    with pytest.raises(RecipeError, match=r"step 2 \(magic\)"):
        preflight(workspace, [{**step, "source_recipe": [{"step": "train", **TRAIN}, {"step": "magic"}]}])

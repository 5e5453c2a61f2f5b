"""The Ray runner on a real local Ray (2 CPUs on 127.0.0.1, one per module): the same jobs give the
same variants as the local runner, cancel and a killed worker end a job with the reason, and the
server keeps working. Tiny data; every wait is bounded, nothing is timed."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from job_helpers import LONG, wait_for

from core.base.paths import REPO_ROOT
from core.measure.metrics import count_params
from core.models.registry import create_model
from core.run import jobs
from core.run.ray.cluster import check_address, runtime_env, wants_gpu
from core.run.ray.runner import RayRunner

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.slow   # a local Ray cluster for the module, actors and Tune: minutes, not seconds

REPO = str(REPO_ROOT)
TINY = {"model": "lenet5-small", "subset": 256, "train": {"epochs": 1, "batch_size": 64, "log_every": 1,
                                                          "device": "cpu", "seed": 3}}


LENET5_SMALL_PARAMS = count_params(create_model("lenet5-small"))[0]   # what a trained lenet5-small holds


def final(ws, job_id: str, timeout: float = 180):
    return wait_for(lambda: (j := ws.jobs.get(job_id)).is_final and j, timeout, f"job {job_id} to end")


def training(ws, job_id: str) -> bool:
    return ws.jobs.get(job_id).state == "running" and any(e.get("kind") == "batch_end" for e in ws.jobs.events(job_id))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", namespace="workbench-tests",
             runtime_env=runtime_env(), logging_level="ERROR", log_to_driver=False)   # as the runner would
    yield
    ray.shutdown()


@pytest.fixture
def on_ray(local_ray, workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNNER", "ray")
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    yield jobs.get_runner("ray")
    for job in workspace.jobs.list(states=("running", "queued")):
        jobs.cancel(workspace, job.id, grace_s=1.0)


def submit_with(ws, runner: str, kind: str, config: dict, monkeypatch) -> str:
    monkeypatch.setenv("WORKBENCH_RUNNER", runner)
    try:
        return jobs.submit(ws, kind, config)
    finally:
        monkeypatch.setenv("WORKBENCH_RUNNER", "ray")


def test_train_and_prune_on_ray_match_the_local_runner(workspace, on_ray, monkeypatch):
    local = final(workspace, submit_with(workspace, "local", "train", TINY, monkeypatch))
    remote = final(workspace, jobs.submit(workspace, "train", TINY))
    assert local.state == remote.state == "done", (local.error, remote.error, remote.log)
    assert (local.runner, remote.runner) == ("local", "ray")
    assert remote.pid and remote.pid != local.pid and remote.device.startswith("cpu")
    node_id = ray.get_runtime_context().get_node_id()[:8]   # where the actor ran, not the cluster's name
    assert remote.node == f"{socket.gethostname()} (Ray node {node_id})" and local.node == socket.gethostname()
    assert f"saved variant {remote.variant_id}" in remote.log and "Ray worker" in remote.log
    kinds = [e["kind"] for e in workspace.jobs.events(remote.id)]
    assert kinds[0] == "start" and "epoch_end" in kinds and kinds[-1] == "end"
    a, b = workspace.get_variant(local.variant_id), workspace.get_variant(remote.variant_id)
    assert b.recipe == a.recipe and b.arch == a.arch
    assert (b.metrics["params"], b.metrics["nonzero_params"]) == (a.metrics["params"], a.metrics["nonzero_params"])
    assert abs(b.metrics["accuracy"] - a.metrics["accuracy"]) < 0.03   # thread counts differ: float noise only
    # the bytes the worker handed back are the stored file, and measure as the worker said
    from core.data.datasets import cached_dataset
    from core.measure.metrics import accuracy

    assert b.metrics["size_bytes"] == workspace.weights_path(b).stat().st_size
    assert b.metrics["accuracy"] == accuracy(workspace.load_model(b), cached_dataset("fashion-mnist").test)

    # a prune of the same parent: the worker got the parent's bytes, not a path on this disk
    prune = {"variant": a.id, "prune": {"amount": 0.6}, "device": "cpu"}
    p_local = final(workspace, submit_with(workspace, "local", "prune", prune, monkeypatch))
    p_remote = final(workspace, jobs.submit(workspace, "prune", prune))
    assert p_local.state == p_remote.state == "done", (p_local.log, p_remote.log)
    pa, pb = workspace.get_variant(p_local.variant_id), workspace.get_variant(p_remote.variant_id)
    assert pb.parent_id == pa.parent_id == a.id and pb.kind == pa.kind
    for key in ("params", "nonzero_params", "accuracy", "sparsity", "size_bytes"):
        assert pb.metrics[key] == pa.metrics[key], key
    assert pb.name == f"{pa.name} (2)"   # the worker saw the server's names
    ra, rb = p_local.result["report"], p_remote.result["report"]
    assert {k: v for k, v in rb.items() if ra[k] != v and k != "seconds"} == {}   # the same report, but its time


def test_cancel_reaches_a_running_ray_job(workspace, on_ray):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training(workspace, job_id), 120, "training to start on Ray")
    job = jobs.cancel(workspace, job_id, grace_s=5.0)
    assert job.state == "cancelled" and job.message.startswith("cancelled at step"), job.message  # not by force
    assert "cancelled" in job.log and job.variant_id is None and workspace.list_variants() == []
    wait_for(lambda: not on_ray.is_alive(workspace.jobs.get(job_id)), 20, "the runner to let go of the actor")


def test_a_killed_ray_worker_fails_its_job_and_the_server_keeps_working(workspace, on_ray):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training(workspace, job_id), 120, "training to start on Ray")
    pid = workspace.jobs.get(job_id).pid
    assert pid and pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    job = final(workspace, job_id, 60)
    assert job.state == "failed"
    assert job.error.startswith(f"Ray worker process {pid} on ") and "died unexpectedly" in job.error, job.error
    assert job.variant_id is None and workspace.list_variants() == [] and not any(workspace.variants_dir.iterdir())
    assert jobs.reap(workspace) == [] and workspace.jobs.get(job_id).state == "failed"   # reap keeps the reason
    # the server, its job store and the cluster carry on: the next job runs to its end
    after = final(workspace, jobs.submit(workspace, "train", TINY))
    assert after.state == "done" and workspace.get_variant(after.variant_id).metrics["params"] == LENET5_SMALL_PARAMS


def test_a_job_asking_for_cuda_on_a_cluster_without_gpus_fails_with_the_reason(workspace, on_ray):
    job_id = jobs.submit(workspace, "train", {**TINY, "train": {**TINY["train"], "device": "cuda"}})
    job = final(workspace, job_id, 30)
    assert job.state == "failed"
    assert job.error == "could not start a worker: ValueError: the job asks for cuda but the Ray cluster has no GPU"


def test_a_ray_job_of_another_server_is_alive_while_that_server_heartbeats(workspace, monkeypatch):
    monkeypatch.setattr("core.run.jobs.started_runners", lambda: [])
    runner = RayRunner()
    job = workspace.jobs.create("train", TINY, "elsewhere")
    workspace.jobs.update(job.id, state="running", runner="ray", pid=4242, started_at=time.time(),
                          heartbeat_at=time.time())
    assert runner.is_alive(workspace.jobs.get(job.id)) and jobs.reap(workspace) == []
    workspace.jobs.update(job.id, heartbeat_at=time.time() - 120)   # that server is gone
    assert not runner.is_alive(workspace.jobs.get(job.id))
    assert jobs.reap(workspace) == [job.id]
    job = workspace.jobs.get(job.id)
    assert job.state == "interrupted" and "exit status is unknown" in job.error
    assert "another server process" in runner.stop(job)


def test_wants_gpu_follows_the_config_device():
    assert wants_gpu({"train": {"device": "cuda"}}, 2) and wants_gpu({"device": "auto"}, 1)
    assert not wants_gpu({"device": "auto"}, 0) and not wants_gpu({"train": {"device": "cpu"}}, 4)
    with pytest.raises(ValueError, match="asks for cuda:1 but the Ray cluster has no GPU"):
        wants_gpu({"device": "cuda:1"}, 0)


@pytest.mark.parametrize("address, error, match", [
    ("nonsense", ValueError, "WORKBENCH_RAY_ADDRESS='nonsense' is not a Ray address: use `auto`"),
    ("ray://10.0.0.1:port", ValueError, "is not a Ray address"),
    ("ray://127.0.0.1:1", ConnectionError, r"cannot reach the Ray cluster at ray://127.0.0.1:1 \(WORKBENCH_RAY_ADDRESS\)"),
    ("127.0.0.1:1", ConnectionError, "Start one with `ray start --head`"),
])
def test_a_bad_ray_address_is_a_clear_error(address, error, match):
    with pytest.raises(error, match=match):
        check_address(address)
    assert check_address(None) is None and check_address("") is None and check_address("auto") == "auto"


def test_the_cli_names_the_runners_it_knows(capsys):
    from core.cli.main import main

    assert main(["--runner", "nowhere", "jobs"]) == 2
    assert "argument --runner: invalid choice: 'nowhere' (choose from 'local', 'ray')" in capsys.readouterr().err


def test_a_bad_address_fails_the_job_not_the_server_and_local_stays_the_default(workspace):
    """In a fresh process without Ray: a job sent to a cluster that is not there fails with the
    reason, the process goes on, and without WORKBENCH_RUNNER jobs run locally (Ray not imported)."""
    code = ("import json, sys; from core.run import jobs; from core.store.workspace import Workspace; "
            "ws = Workspace(sys.argv[1], seed_baselines=False); "
            "jid = jobs.submit(ws, 'train', json.loads(sys.argv[2])); j = ws.jobs.get(jid); "
            "print(json.dumps([j.state, j.runner, j.error, 'ray' in sys.modules]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKBENCH_RUNNER")}
    bad = {**env, "WORKBENCH_RUNNER": "ray", "WORKBENCH_RAY_ADDRESS": "ray://127.0.0.1:1"}
    out = subprocess.run([sys.executable, "-c", code, str(workspace.root), json.dumps(TINY)], env=bad, cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    state, runner, error, _ = json.loads(out.stdout.strip().splitlines()[-1])
    assert (state, runner) == ("failed", "ray")
    assert error.startswith("could not start a worker: ConnectionError: cannot reach the Ray cluster at "
                            "ray://127.0.0.1:1 (WORKBENCH_RAY_ADDRESS)")
    probe = "import sys; from core.run import jobs; print(jobs.get_runner().name, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["local", "False"], out.stderr


def test_the_cli_sends_a_job_to_an_existing_cluster_and_waits_for_it(workspace, local_ray):
    """`--runner ray` with WORKBENCH_RAY_ADDRESS=HOST:PORT (this module's cluster): another process
    connects, ships `core` with the job, and waits by itself (the actor belongs to it)."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_RUNNER"}
    env["WORKBENCH_RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    out = subprocess.run([sys.executable, "-m", "core", "--workspace", str(workspace.root), "--runner", "ray", "--json",
                          "submit", "train", "model=lenet5-small", "subset=128", "train.epochs=1", "train.device=cpu"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["state"] == "done" and got["error"] is None
    job = workspace.jobs.get(got["job_id"])
    assert job.runner == "ray" and "Ray node" in job.node and job.variant_id == got["variant_id"]
    assert workspace.get_variant(job.variant_id).metrics["params"] == LENET5_SMALL_PARAMS


def test_a_sensitivity_scan_fans_out_on_ray_and_gives_the_local_numbers(workspace, on_ray):
    from core.tasks import TaskContext, run_task

    base = run_task("train", {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id
    scan = {"variant": base, "amounts": [0.5, 0.9], "val_subset": 100}
    local = json.loads(json.dumps(run_task("sensitivity", scan, TaskContext(workspace)).result))   # the local loop
    job = final(workspace, jobs.submit(workspace, "sensitivity", scan))
    assert job.state == "done", job.error
    assert "one task per layer" in job.log and job.runner == "ray"
    assert job.result == local and len(local["layers"]) == 3   # conv1, conv2, fc1 (the output layer is kept)
    points = [e for e in workspace.jobs.events(job.id) if e.get("kind") == "point"]
    assert sorted((p["layer"], p["amount"]) for p in points) == sorted(
        (r["name"], a) for r in local["layers"] for a in local["amounts"])
    assert [p["done"] for p in points] == list(range(1, len(points) + 1))


def test_a_measure_job_on_ray_updates_the_servers_variant(workspace, on_ray):
    """A task that changes a variant in place: the worker's update travels back and is applied here."""
    from core.tasks import TaskContext, run_task

    base = run_task("train", {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id
    before = workspace.get_variant(base).metrics
    job = final(workspace, jobs.submit(workspace, "measure", {"variant": base, "what": "latency", "device": "cpu"}))
    assert job.state == "done", job.error
    after = workspace.get_variant(base).metrics
    measured = job.result["metrics"]
    assert after["latency_measured_at"] == measured["latency_measured_at"] != before["latency_measured_at"]
    assert after["latency_ms_b1"] == measured["latency_ms_b1"] and after["accuracy"] == before["accuracy"]
    assert len(workspace.list_variants()) == 1   # updated, not copied


def test_cancel_of_a_fanned_out_scan_cancels_its_layer_tasks(workspace, on_ray):
    from core.tasks import TaskContext, run_task

    base = run_task("train", {"model": "resnet-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id
    # 9 layer tasks of a few seconds each, two at a time (the scan's own actor holds no CPU): when the
    # first layer is in, most are still waiting or running
    scan = {"variant": base, "amounts": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], "val_subset": 1000}
    job_id = jobs.submit(workspace, "sensitivity", scan)
    wait_for(lambda: any(e.get("kind") == "point" for e in workspace.jobs.events(job_id)), 120, "the first layer")
    job = jobs.cancel(workspace, job_id, grace_s=5.0)
    assert job.state == "cancelled", (job.state, job.message)
    assert job.message.startswith("sensitivity cancelled with") and "of 9 layers still running" in job.message
    assert job.result is None


SWEEP = {"family": "prune_finetune", "grid": {"amount": [0.5, 0.9], "epochs": [1]}, "subset": 256, "device": "cpu"}


def test_a_sweep_runs_its_trials_with_ray_tune_and_gives_the_local_numbers(workspace, on_ray):
    from core.tasks import TaskContext, run_task

    base = run_task("train", {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id
    local = run_task("sweep", {"variant": base, **SWEEP}, TaskContext(workspace)).result
    job = final(workspace, jobs.submit(workspace, "sweep", {"variant": base, **SWEEP}), 300)
    assert job.state == "done", (job.error, job.log)
    r = job.result
    assert job.runner == "ray" and r["mode"] == "ray_tune" and "in parallel with Ray Tune" in job.log
    for a, b in zip(local["trials"], r["trials"], strict=True):
        assert a["params"] == b["params"] and b["state"] == "done" and "Ray node" in b["node"]
        for key in ("nonzero_params", "params", "size_bytes"):
            assert b["metrics"][key] == a["metrics"][key], key
        assert abs(b["metrics"]["val_accuracy"] - a["metrics"]["val_accuracy"]) < 0.03
    # the best trial's bytes came back through Ray and are the stored file, measured as the trial said
    best = workspace.get_variant(job.variant_id)
    assert best.parent_id == base and best.metrics["size_bytes"] == workspace.weights_path(best).stat().st_size
    assert best.metrics["nonzero_params"] == r["trials"][r["best_trial"]]["metrics"]["nonzero_params"]
    assert len(workspace.list_variants()) == 3   # base, the local sweep's best, the Ray sweep's best
    kinds = [e["kind"] for e in workspace.jobs.events(job.id) if e.get("stage") == "sweep"]
    assert kinds[0] == "start" and kinds.count("trial") == 2 and kinds[-1] == "result"


def test_cancel_of_a_ray_sweep_stops_its_trials(workspace, on_ray):
    from core.tasks import TaskContext, run_task

    base = run_task("train", {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id
    long = {**SWEEP, "grid": {"amount": [0.5, 0.9], "epochs": [30]}, "subset": 2000}
    job_id = jobs.submit(workspace, "sweep", {"variant": base, **long})
    wait_for(lambda: any(e.get("kind") == "trial_progress" for e in workspace.jobs.events(job_id)), 180,
             "a trial to report progress")
    # the grace only bounds a hang: a sweep that did not stop by itself is stopped by force, and says so
    job = jobs.cancel(workspace, job_id, grace_s=120.0)
    assert job.state == "cancelled", (job.state, job.message, job.log)
    # stopped by the sweep itself (not by force), before any trial ended
    assert job.message.startswith("sweep cancelled with 0 of 2 trials finished"), job.message
    assert job.variant_id is None and len(workspace.list_variants()) == 1
    # the trials were stopped at their next step, not run out: no trial row, no result, and neither got
    # anywhere near the end of its 30 epochs (counted in steps, not seconds)
    events = [e for e in workspace.jobs.events(job_id) if e.get("stage") == "sweep"]
    assert not [e for e in events if e["kind"] in ("trial", "result")], events
    progress = [e["progress"] for e in events if e["kind"] == "trial_progress"]
    assert progress and max(progress) < 0.5, progress
    wait_for(lambda: not on_ray.is_alive(workspace.jobs.get(job_id)), 60, "the runner to let go of the actor")

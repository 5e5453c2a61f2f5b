"""How the shared server holds up: N people at once, with and without a training job.

Starts `streamlit run app.py` on 127.0.0.1 (a fresh temporary WORKBENCH_HOME seeded with the
shipped baselines), then N concurrent sessions each open the app and, `--rounds` times, go to
Model, Prune (and move the Amount slider there) and Home, thinking after each action: `--think`
seconds on average, drawn uniformly within +-`--jitter` of it per session (seeded, so every run
draws the same; `--jitter 0` keeps all sessions in lockstep, a class doing the same at once).
Each phase (driver x job x N) gets a fresh server, warmed by one untimed visit to every page, so
caches start the same way.

Two drivers:
  browser  real Chromium tabs (Playwright): the time a person waits, the browsers' own work included
  script   a websocket client that sends what the browser sends and waits for the run to finish
           (bench/load_ws.py): the server's own time, with no browser on the machine

With a job, a `train` job (core.run.jobs.submit) runs during the whole phase and is cancelled at its
end. Per page it prints and saves p50/p95/max of the time to an idle page, and per phase the
server's CPU seconds per page run (utime+stime of the server process from /proc, over the page
runs; the job card's polling runs are counted apart). It also reports what else used the CPU
meanwhile: the job's worker, Chromium, and other processes (other people's tests count there).

    .venv/bin/python bench/load.py [--sessions 1 10] [--job | --no-job] [--rounds 3]
                                   [--driver browser|script|both] [--think 1.0] [--jitter 0.5]
                                   [--out load]

Results: bench/results/<out>.md and .json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import free_port, md_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_ws import WsSession, radio_value, slider_value  # noqa: E402

RESULTS = REPO / "bench" / "results"
HZ = os.sysconf("SC_CLK_TCK")
PAGES = ("open", "model", "prune", "prune slider", "home")
GOAL_S = 1.0   # the server's own time per page run, p95, 10 sessions with a job


# ---------------------------------------------------------------- CPU accounting (Linux /proc)

def proc_stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, CPU seconds, nice) of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), (int(rest[11]) + int(rest[12])) / HZ, int(rest[16])


def proc_cpu(pid: int) -> float:
    st = proc_stat(pid)
    return st[1] if st else 0.0


def machine_busy() -> float:
    """CPU seconds all processes used since boot (user nice system irq softirq steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:3]) + sum(v[5:8])) / HZ


def descendants(root: int) -> dict[int, float]:
    """CPU seconds of every live descendant of `root`."""
    stats = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := proc_stat(int(d))) is not None:
            stats[int(d)] = st
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    out, frontier = {}, [root]
    while frontier:
        for k in kids.get(frontier.pop(), []):
            out[k] = stats[k][1]
            frontier.append(k)
    return out


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


class CpuSnapshot:
    """Everything that used the CPU during a phase, split into server, job worker, our own
    process (the websocket clients, Playwright's driver), Chromium and everything else."""

    def __init__(self, server_pid: int, worker_pid: int | None):
        self.server_pid, self.worker_pid = server_pid, worker_pid
        self.t = time.monotonic()
        self.busy = machine_busy()
        self.own = own_cpu()
        self.procs = descendants(os.getpid())

    def since(self, start: CpuSnapshot) -> dict:
        wall = self.t - start.t
        per = {p: c - start.procs.get(p, 0.0) for p, c in self.procs.items()}
        server = per.get(self.server_pid, 0.0)
        worker = per.get(self.worker_pid, 0.0) if self.worker_pid else 0.0
        ours = sum(per.values()) + (self.own - start.own)
        return {"wall_s": wall, "server_cpu_s": server, "worker_cores": worker / wall,
                "client_cores": (ours - server - worker) / wall,
                "other_cores": max(0.0, (self.busy - start.busy) - ours) / wall}


class Clock:
    """The timed part of a phase: the driver calls start() when every session is ready and stop()
    when all are done (before closing its browsers, whose CPU is read while they are alive)."""

    def __init__(self, server_pid: int, worker_pid: int | None):
        self.pids = (server_pid, worker_pid)

    def start(self) -> None:
        self.begin = CpuSnapshot(*self.pids)

    def stop(self) -> None:
        self.end = CpuSnapshot(*self.pids)


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


# ---------------------------------------------------------------- server and job

@contextmanager
def app_server(home: Path, log: Path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_MAX_JOBS": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                                 "--server.port", str(port), "--server.headless", "true",
                                 "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        end = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=2).read().strip() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > end:
                raise RuntimeError(f"streamlit did not start; see {log}")
            time.sleep(0.3)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_training(ws, epochs: int):
    """A `train` job long enough to outlast the phase; returns it once its worker is training."""
    from core.run import jobs

    job_id = jobs.submit(ws, "train", {"model": "lenet5", "train": {"epochs": epochs}})
    end = time.time() + 180
    while time.time() < end:
        job = ws.jobs.get(job_id)
        if job.state != "running" and job.state != "queued":
            raise RuntimeError(f"the training job ended before the phase: {job.state} {job.error or job.message}")
        if job.state == "running" and job.pid and ws.jobs.events(job_id):
            return job
        time.sleep(0.5)
    raise RuntimeError("the training job did not start training within 180 s")


def worker_info(pid: int | None) -> str:
    if not pid or (st := proc_stat(pid)) is None:
        return "-"
    try:
        threads = next(line.split()[1] for line in open(f"/proc/{pid}/status") if line.startswith("Threads:"))
    except (OSError, StopIteration):
        threads = "?"
    return f"nice {st[2]}, {threads} threads"


# ---------------------------------------------------------------- the script (websocket) driver

def slider_plan(method_opts: list[str], scope_opts: list[str], n: int) -> list[tuple[str, str, float]]:
    """`n` distinct (method, scope, amount) settings, so every slider move misses the shared
    preview cache as a new setting does for a person (50% is what every page load shows)."""
    amounts = [round(0.05 * i, 2) for i in range(1, 20) if i != 10]
    plan = [(m, s, a) for m in method_opts for s in scope_opts for a in amounts]
    random.Random(0).shuffle(plan)
    return [plan[i % len(plan)] for i in range(n)]


class Think:
    """A session's pauses: uniform in [mean * (1 - jitter), mean * (1 + jitter)], seeded per session."""

    def __init__(self, mean: float, jitter: float, session: int):
        self.mean, self.jitter = mean, jitter
        self.rng = random.Random(1000 + session)

    def next(self) -> float:
        return self.mean * (1 + self.jitter * (2 * self.rng.random() - 1))


def ws_session_actions(url: str, query: str, rounds: int, think: Think, plan, record, barrier) -> None:
    s = WsSession(url, query)
    try:
        barrier.wait()
        cur = {"page": "open"}
        poll = lambda r: record(cur["page"] + " (poll)", r, polled=True)   # noqa: E731
        record("open", s.open_page())
        s.think(think.next(), poll)
        widgets: dict = {}   # the Prune page's widgets, from its last load
        for r in range(rounds):
            for path, name in (("model", "model"), ("prune", "prune"), ("prune", "prune slider"), ("", "home")):
                cur["page"] = name
                if name == "prune slider":
                    method, scope, amount = plan[r]
                    out = s.set_widgets({widgets["Amount"][0]: slider_value(widgets["Amount"][0], amount),
                                         widgets["Method"][0]: radio_value(widgets["Method"][0], method),
                                         widgets["Scope"][0]: radio_value(widgets["Scope"][0], scope)})
                else:
                    out = s.open_page(path)
                    widgets = out.widgets
                record(name, out)
                s.think(think.next(), poll)
    finally:
        s.close()


def run_script_driver(url: str, server_pid: int, n: int, rounds: int, think: tuple[float, float], query: str,
                      clock) -> list[dict]:
    probe = WsSession(url, query)             # the Prune page's radio options, for the slider plan
    probe.open_page()
    w = probe.open_page("prune").widgets
    probe.close()
    methods = [o for o in w["Method"][1].options if not o.lower().startswith("channel")]
    plans = slider_plan(methods, list(w["Scope"][1].options), n * rounds)
    samples: list[dict] = []
    lock = threading.Lock()

    def make_record(i: int):
        last_cpu = [proc_cpu(server_pid)]

        def record(page: str, res, polled: bool = False) -> None:
            cpu = proc_cpu(server_pid)
            with lock:
                samples.append({"session": i, "page": page, "seconds": res.seconds, "bytes": res.bytes,
                                "exception": res.exception, "poll": polled,
                                "server_cpu_s": cpu - last_cpu[0] if n == 1 else None})
            last_cpu[0] = cpu
        return record

    barrier = threading.Barrier(n, action=clock.start)   # the clock starts when every session is connected
    threads = [threading.Thread(target=ws_session_actions, daemon=True,
                                args=(url, query, rounds, Think(*think, i), plans[i * rounds:(i + 1) * rounds],
                                      make_record(i), barrier)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clock.stop()
    return samples


def warm_up(url: str, query: str) -> None:
    """One untimed visit to every page (imports, dataset, models, the 50% preview)."""
    s = WsSession(url, query)
    for path in ("", "model", "prune", ""):
        s.open_page(path)
    s.close()


# ---------------------------------------------------------------- the browser driver

def run_browser_driver(url: str, server_pid: int, n: int, rounds: int, think: tuple[float, float], query: str,
                       clock) -> list[dict]:
    from load_browser import CHROMIUM, CHROMIUM_ARGS, BrowserSession
    from playwright.async_api import async_playwright

    samples: list[dict] = []

    async def one(browser, i: int, start: asyncio.Event) -> None:
        s = await BrowserSession.open(browser, url)
        pause = Think(*think, i)
        cpu = [proc_cpu(server_pid)]

        def record(page: str, seconds: float) -> None:
            now = proc_cpu(server_pid)
            samples.append({"session": i, "page": page, "seconds": seconds, "poll": False, "exception": "",
                            "server_cpu_s": now - cpu[0] if n == 1 else None})
            cpu[0] = now

        await start.wait()
        record("open", await s.load(query))
        await asyncio.sleep(pause.next())
        for _ in range(rounds):
            for name in ("model", "prune", "prune slider", "home"):
                if name == "prune slider":
                    record(name, await s.move_amount())
                else:
                    record(name, await s.open_page("" if name == "home" else name))
                await asyncio.sleep(pause.next())
        return s

    async def main() -> None:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            start = asyncio.Event()
            tasks = [asyncio.create_task(one(browser, i, start)) for i in range(n)]
            await asyncio.sleep(1.0)    # every context open before the clock starts
            clock.start()
            start.set()
            sessions = await asyncio.gather(*tasks)
            clock.stop()                # before the tabs close: their processes' CPU is counted while alive
            for s in sessions:
                await s.close()
            await browser.close()

    asyncio.run(main())
    return samples


# ---------------------------------------------------------------- phases and tables

def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) with linear interpolation between the sorted values."""
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * q
    lo = int(k)
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * (k - lo)


def run_phase(driver: str, n: int, with_job: bool, a, ws, home: Path, log: Path) -> dict:
    query = f"variant={a.variant}"
    with app_server(home, log) as (url, server_pid):
        warm_up(url, query)
        job = start_training(ws, a.epochs) if with_job else None
        print(f"[{driver}, {n} session(s), {'with' if with_job else 'no'} job] load {loadavg()}", flush=True)
        load_before = loadavg()
        clock = Clock(server_pid, job.pid if job else None)
        run = run_browser_driver if driver == "browser" else run_script_driver
        try:
            samples = run(url, server_pid, n, a.rounds, (a.think, a.jitter), query, clock)
        finally:
            worker = worker_info(job.pid) if job else "-"
            if job is not None:
                from core.run import jobs
                jobs.cancel(ws, job.id, grace_s=5.0)
    cpu = clock.end.since(clock.begin)
    runs = [s for s in samples if not s["poll"]]
    polls = [s for s in samples if s["poll"]]
    summary = {"driver": driver, "sessions": n, "job": with_job, "page runs": len(runs), "poll runs": len(polls),
               "wall s": round(cpu["wall_s"], 1), "server CPU s": round(cpu["server_cpu_s"], 2),
               "server CPU s / page run": round(cpu["server_cpu_s"] / max(1, len(runs)), 3),
               "server cores": round(cpu["server_cpu_s"] / cpu["wall_s"], 2),
               "job worker cores": round(cpu["worker_cores"], 2), "job worker": worker,
               "bench+browser cores": round(cpu["client_cores"], 2), "other cores": round(cpu["other_cores"], 2),
               "load before": load_before, "load after": loadavg(),
               "exceptions": sum(bool(s["exception"]) for s in samples),
               "p95 all pages s": round(pct([s["seconds"] for s in runs], 0.95), 2)}
    rows = []
    for page in [*PAGES, *sorted({s["page"] for s in polls})]:
        xs = [s["seconds"] for s in samples if s["page"] == page]
        if not xs:
            continue
        cpus = [s["server_cpu_s"] for s in samples if s["page"] == page and s["server_cpu_s"] is not None]
        rows.append({"driver": driver, "sessions": n, "job": "yes" if with_job else "no", "page": page, "n": len(xs),
                     "p50 s": round(pct(xs, 0.5), 2), "p95 s": round(pct(xs, 0.95), 2), "max s": round(max(xs), 2),
                     "server CPU s/run (1 session)": round(pct(cpus, 0.5), 3) if cpus else ""})
    print(md_table(rows, ROW_COLS), flush=True)
    print(md_table([summary], SUMMARY_COLS), flush=True)
    return {"summary": summary, "pages": rows, "samples": samples}


ROW_COLS = ["driver", "sessions", "job", "page", "n", "p50 s", "p95 s", "max s", "server CPU s/run (1 session)"]
SUMMARY_COLS = ["driver", "sessions", "job", "page runs", "poll runs", "wall s", "server CPU s",
                "server CPU s / page run", "server cores", "p95 all pages s", "job worker cores", "job worker",
                "bench+browser cores", "other cores", "load before", "load after", "exceptions"]


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return rev.strip() + (" (working tree has uncommitted changes)" if dirty else "")
    except OSError:
        return "?"


def report(a, phases: list[dict], started: str, load_start: str) -> str:
    import streamlit
    import torch

    goal = [p["summary"] for p in phases if p["summary"]["driver"] == "script" and p["summary"]["sessions"] >= 10
            and p["summary"]["job"]]
    text = (f"# Load benchmark ({started}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"streamlit {streamlit.__version__}, commit {git_rev()})\n\n"
            f"Command: `.venv/bin/python bench/load.py {' '.join(sys.argv[1:])}`\n\n"
            f"Every session opens the app on `?variant={a.variant}`, then {a.rounds} round(s) of Model, Prune, "
            f"a slider move on Prune and Home, thinking {a.think:g} s +-{a.jitter:.0%} (uniform) after each action. "
            "A fresh server per phase, "
            "warmed by one untimed visit to every page. Time = from the click (or the rerun request) to an idle page. "
            "The script driver moves the slider to a setting not previewed before (method, scope and amount "
            "differ per move); the browser driver moves it 0.50 -> 0.55 (a shared-cache hit after the first). "
            "`(poll)` rows are the job card's polling fragment (every second while a job runs). "
            f"Load average at the start: {load_start}. 'other cores' is CPU used by processes that are not this "
            "benchmark's (other people's tests): a phase with other cores well above 0 is not comparable.\n\n"
            "## Per page\n\n" + md_table([r for p in phases for r in p["pages"]], ROW_COLS) +
            "\n\n## Per phase\n\n" + md_table([p["summary"] for p in phases], SUMMARY_COLS) + "\n")
    for g in goal:
        ok = g["p95 all pages s"] < GOAL_S
        text += (f"\nGoal (script driver, {g['sessions']} sessions and a job: the server's own time per page run "
                 f"under {GOAL_S:g} s at p95): p95 {g['p95 all pages s']} s, {'met' if ok else 'NOT met'}.\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 10], help="concurrent sessions per phase")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--job", dest="jobs", action="store_const", const=[True], help="only with a training job")
    g.add_argument("--no-job", dest="jobs", action="store_const", const=[False], help="only without a job")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of Model, Prune, slider, Home per session")
    ap.add_argument("--driver", choices=["browser", "script", "both"], default="both")
    ap.add_argument("--think", type=float, default=1.0, help="seconds a session waits after each action, on average")
    ap.add_argument("--jitter", type=float, default=0.5, help="think times drawn within +-this fraction (0: lockstep)")
    ap.add_argument("--variant", default="base-lenet5", help="the active variant of every session")
    ap.add_argument("--epochs", type=int, default=100, help="epochs of the training job (it is cancelled anyway)")
    ap.add_argument("--out", default="load", help="results file name under bench/results/ (without suffix)")
    a = ap.parse_args()
    job_modes = a.jobs or [False, True]
    drivers = ["script", "browser"] if a.driver == "both" else [a.driver]

    from core.store.workspace import Workspace

    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), loadavg()
    phases, failures = [], []

    def save() -> str:   # after every phase: a run cut short still leaves what it measured
        text = report(a, phases, started, load_start)
        if failures:
            text += "\nPhases that did not finish:\n\n" + "\n".join(f"- {f}" for f in failures) + "\n"
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{a.out}.md").write_text(text)
        (RESULTS / f"{a.out}.json").write_text(json.dumps(
            {"started": started, "args": vars(a), "commit": git_rev(), "load_start": load_start,
             "phases": phases, "failures": failures}, indent=1))
        return text

    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        home = Path(tmp) / "ws"
        ws = Workspace(home)     # seeded with the shipped baselines
        log = Path(tmp) / "server.log"
        for driver in drivers:
            for with_job in job_modes:
                for n in a.sessions:
                    try:
                        phases.append(run_phase(driver, n, with_job, a, ws, home, log))
                    except Exception as e:   # noqa: BLE001  (reported, and the other phases still run)
                        failures.append(f"{driver}, {n} session(s), {'with' if with_job else 'no'} job: "
                                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                        print("phase failed:", failures[-1], flush=True)
                    save()
        if phases and (errors := [s["exception"] for p in phases for s in p["samples"] if s["exception"]]):
            print("exceptions seen:", *sorted(set(errors))[:5], sep="\n  ")
        if log.exists() and "Traceback" in log.read_text():
            print("the server logged tracebacks:\n" + log.read_text()[-3000:])
    print()
    print(save())


if __name__ == "__main__":
    main()

"""Where the server's time goes in one run of each page: pyinstrument inside AppTest.

Runs app.py with AppTest against a fresh temporary workspace (seeded with the shipped baselines),
warms every page once, then profiles one more run of Home, Model, Prune and a slider move on
Prune, and optionally the same with a training job running. Only the script thread is profiled
(the page script, Streamlit's element building and the caches it calls); AppTest's own parsing
of the result is not. AppTest also skips what a real server does around the script, notably the
full garbage collection after every run (`runner.postScriptGC`), which was most of the server's
time per run before ui/resources.py froze the imports: bench/profile_server.py samples the real
server for that.

    .venv/bin/python bench/profile_pages.py [--job] [--runs 3] [--out profile]

Prints each page's profile (wall time per call tree, trimmed) and saves them to
bench/results/<out>.txt.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"


def profiled_runs():
    """Patch the script runner so that every run's thread is profiled; returns the list of
    finished profiles (one pyinstrument Session per script run)."""
    from pyinstrument import Profiler
    from streamlit.runtime.scriptrunner import script_runner

    sessions = []
    original = script_runner.ScriptRunner._run_script

    def run(self, rerun_data):
        prof = Profiler(interval=0.001)
        prof.start()
        try:
            return original(self, rerun_data)
        finally:
            sessions.append(prof.stop())

    script_runner.ScriptRunner._run_script = run
    return sessions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--job", action="store_true", help="profile with a training job running")
    ap.add_argument("--runs", type=int, default=3, help="profiled runs per page (the median one is shown)")
    ap.add_argument("--out", default="profile")
    a = ap.parse_args()

    tmp = tempfile.TemporaryDirectory(prefix="profile-pages-")
    os.environ["WORKBENCH_HOME"] = str(Path(tmp.name) / "ws")
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from core.store.workspace import Workspace

    ws = Workspace(os.environ["WORKBENCH_HOME"])
    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):   # as a real server after its first run: no legacy pages/ mode
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init_v2
    job = None
    if a.job:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from load import start_training

        job = start_training(ws, epochs=100)

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=300)
    steps = [("home", lambda: at.switch_page("pages/home.py").run()),
             ("model", lambda: at.switch_page("pages/model.py").run()),
             ("prune", lambda: at.switch_page("pages/prune.py").run())]
    amounts = iter([0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.45, 0.4, 0.35, 0.3])

    def slider():   # the profile kept is the last run's: the move, not the page load before it
        at.switch_page("pages/prune.py").run()
        at.slider(key="prune-amount").set_value(next(amounts)).run()

    at.run()
    for _, step in steps:   # warm: imports, dataset, models, every cache filled once
        step()
    sessions = profiled_runs()
    out = []
    try:
        for name, step in [*steps, ("prune slider", slider)]:
            runs = []
            for _ in range(a.runs):
                step()
                assert not at.exception, [e.value for e in at.exception]
                runs.append(sessions[-1])
            runs.sort(key=lambda s: s.duration)
            mid = runs[len(runs) // 2]
            head = (f"===== {name}: median of {a.runs} runs {mid.duration:.3f} s wall "
                    f"(runs: {', '.join(f'{s.duration:.3f}' for s in runs)}), job running: {bool(job)}")
            from pyinstrument.renderers import ConsoleRenderer

            text = ConsoleRenderer(unicode=False, color=False, show_all=False, short_mode=True,
                                   time="seconds").render(mid)
            out.append(head + "\n" + text)
            print(head, flush=True)
    finally:
        if job is not None:
            from core.run import jobs

            jobs.cancel(ws, job.id, grace_s=5.0)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.txt").write_text(f"load average {open('/proc/loadavg').read().strip()}\n\n" + "\n".join(out))
    print("\n".join(out))


if __name__ == "__main__":
    main()

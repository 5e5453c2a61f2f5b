"""Where the real server's time goes, per page: py-spy samples `streamlit run app.py` while the
browser-free client of bench/load.py runs one page again and again.

AppTest (bench/profile_pages.py) shows a page script's call tree, but it replaces the parts of a
run that happen around the script: Streamlit's garbage collection after each run, sending the
messages, the session's event loop. This profiles the server process itself, every thread,
sampling at `--rate` Hz, and prints per page the server CPU seconds per run and the functions
that take the most samples (self and inclusive).

    .venv/bin/python bench/profile_server.py [--runs 30] [--job] [--out profile-server]

Needs py-spy (`.venv/bin/pip install py-spy`; a development tool, not a runtime dependency).
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import RESULTS, app_server, proc_cpu, start_training, warm_up  # noqa: E402
from load_ws import WsSession, radio_value, slider_value  # noqa: E402

IDLE = ("select", "wait", "sleep", "_worker", "accept", "recv", "poll")   # frames of threads that only wait


def aggregate(raw: Path, top: int) -> str:
    """Self and inclusive sample counts per function from py-spy's raw (collapsed) output."""
    own, incl, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if any(w in frames[-1].split(" ")[0].lower() for w in IDLE) or "polling_path_watcher" in frames[-1]:
            continue
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            incl[f] += int(n)
    skip = ("threading.py", "<frozen runpy>", "click/core.py", "asyncio/", "concurrent/futures")
    lines = [f"busy samples: {total}", "self:"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["inclusive (app and Streamlit frames):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top * 4)
              if not any(s in f for s in skip)][:top * 2]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="runs of each page while sampling")
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--job", action="store_true", help="with a training job running")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default="profile-server")
    a = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    from core.store.workspace import Workspace

    out = [f"# Server profile ({time.strftime('%Y-%m-%d %H:%M:%S')}), load average "
           f"{open('/proc/loadavg').read().split()[:3]}, job running: {a.job}\n"]
    with tempfile.TemporaryDirectory(prefix="profile-server-") as tmp:
        home = Path(tmp) / "ws"
        ws = Workspace(home)
        with app_server(home, Path(tmp) / "server.log") as (url, pid):
            query = "variant=base-lenet5"
            warm_up(url, query)
            job = start_training(ws, 100) if a.job else None
            try:
                s = WsSession(url, query)
                s.open_page()
                widgets = s.open_page("prune").widgets
                amounts = iter([round(0.05 * i, 2) for i in range(1, 20) if i != 10] * 10)
                methods = [o for o in widgets["Method"][1].options if not o.lower().startswith("channel")]

                def slider():
                    w = s.open_page("prune").widgets
                    return s.set_widgets({w["Amount"][0]: slider_value(w["Amount"][0], next(amounts)),
                                          w["Method"][0]: radio_value(w["Method"][0], methods[0])})

                cases = [("home", lambda: s.open_page("")), ("model", lambda: s.open_page("model")),
                         ("prune", lambda: s.open_page("prune")), ("prune slider (with its page load)", slider)]
                for name, step in cases:
                    raw = Path(tmp) / f"{len(out)}.raw"
                    spy_proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(a.rate),
                                                 "--format", "raw", "-o", str(raw)],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)
                    c0, t0 = proc_cpu(pid), time.perf_counter()
                    for _ in range(a.runs):
                        step()
                    c1, wall = proc_cpu(pid), time.perf_counter() - t0
                    spy_proc.send_signal(2)    # SIGINT: py-spy writes what it sampled
                    spy_proc.wait(timeout=60)
                    head = (f"## {name}: {a.runs} runs, server CPU {(c1 - c0) / a.runs:.3f} s/run, "
                            f"wall {wall / a.runs:.3f} s/run")
                    print(head, flush=True)
                    out.append(head + "\n\n```\n" + aggregate(raw, a.top) + "\n```\n")
                s.close()
            finally:
                if job is not None:
                    from core.run import jobs

                    jobs.cancel(ws, job.id, grace_s=5.0)
    text = "\n".join(out)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{a.out}.md").write_text(text)


if __name__ == "__main__":
    main()

"""Requests per second of the REST and gRPC services (`python -m core serve`) on 127.0.0.1.

Starts one server process (REST and gRPC, the same loaded model) for a variant, then sends a
fixed number of batch-1 predict requests per row with a bounded client (every request has a
timeout; a row stops counting at its request budget), sequentially (1 client) and concurrently
(N clients, threads in this process, each with its own keep-alive connection or channel).
Reports req/s (requests / wall time of the row), median and p95 latency per request, and errors;
an `in-process predict` row (the same Predictor call without a network) is the reference.
Each row is preceded by untimed warm-up requests.

    .venv/bin/python bench/serve_bench.py [--variant base-lenet5] [--requests 1000] [--concurrency 4]
                                          [--device cpu|cuda] [--quick] [--out serve_bench]

The clients run on the same machine as the server and share its cores: on a small machine the
numbers are a floor for the service, not a property of the model alone. The load average before
and after the run is saved with the table (bench/results/serve_bench.md).
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import free_port  # noqa: E402

RESULTS = REPO / "bench" / "results"


def inputs(quick: bool) -> list[tuple[str, bytes, str, int]]:
    """(name, bytes, content type, label): a Fashion-MNIST test image as a 28x28 PNG and, for the
    full run, the same item as a photo-sized JPEG (dark on light, 640x480, off-centre)."""
    import numpy as np
    from PIL import Image

    from core.data.datasets import cached_dataset

    test = cached_dataset("fashion-mnist").test
    arr, label = test.images[0, 0].numpy(), int(test.labels[0])
    out = []
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    out.append(("28x28 PNG", buf.getvalue(), "image/png", label))
    if not quick:
        item = Image.fromarray(255 - arr).resize((224, 224), Image.BICUBIC).convert("RGB")
        photo = Image.new("RGB", (640, 480), (235, 232, 226))
        photo.paste(item, (300, 150))
        noise = np.random.default_rng(0).integers(-6, 7, (480, 640, 3))
        photo = Image.fromarray(np.clip(np.asarray(photo, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        photo.save(buf, format="JPEG", quality=90)
        out.append(("640x480 JPEG", buf.getvalue(), "image/jpeg", label))
    return out


class Server:
    def __init__(self, workspace: Path, variant: str, device: str, threads: int | None):
        self.port, self.grpc_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "core", "--workspace", str(workspace), "serve", variant, "--port", str(self.port),
               "--grpc-port", str(self.grpc_port), "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        self.cmd = cmd
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, text=True)

    def wait(self, timeout: float = 300) -> dict:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise SystemExit(f"the server exited with {self.proc.returncode}:\n{self.log.read()[-3000:]}")
            try:
                r = httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2)
                if r.status_code == 200:
                    return r.json()
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        self.stop()
        raise SystemExit(f"the server did not answer /health within {timeout:.0f}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def server_ms(timing: str | None) -> float:
    """The duration of `predict;dur=MS` (the service's Server-Timing), NaN when absent."""
    try:
        return float(str(timing).split("dur=")[1].split(";")[0])
    except (IndexError, ValueError):
        return float("nan")


def rest_caller(port: int, data: bytes, ctype: str, multipart: bool, timeout: float):
    import httpx

    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout)

    def call() -> tuple[int, float]:
        if multipart:
            r = client.post("/predict", files={"file": ("item", data, ctype)})
        else:
            r = client.post("/predict", content=data, headers={"content-type": ctype})
        r.raise_for_status()
        return r.json()["predictions"][0]["index"], server_ms(r.headers.get("server-timing"))
    return call, client.close


def grpc_caller(port: int, data: bytes, timeout: float):
    import grpc

    from core.io.serve.grpc_gen import predict_pb2, predict_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = predict_pb2_grpc.PredictorStub(channel)
    request = predict_pb2.PredictRequest(image=data)

    def call() -> tuple[int, float]:
        reply, rpc = stub.Predict.with_call(request, timeout=timeout)
        return reply.predictions[0].index, server_ms(dict(rpc.trailing_metadata() or ()).get("server-timing"))
    return call, channel.close


def run_row(make_caller, label: int, requests: int, clients: int, warmup: int) -> dict:
    """`requests` calls split over `clients` threads, each with its own caller; per-call latency."""
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    latencies: list[float] = []
    inside: list[float] = []
    errors = wrong = 0
    lock = threading.Lock()
    callers = [make_caller() for _ in range(clients)]
    for call, _ in callers:   # warm-up: connections open, server threads and caches warm
        for _ in range(max(1, warmup // clients)):
            call()
    barrier = threading.Barrier(clients + 1)

    def worker(call, n):
        nonlocal errors, wrong
        mine, srv, bad, miss = [], [], 0, 0
        barrier.wait()
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                got, ms = call()
            except Exception:  # noqa: BLE001 - counted, the row goes on
                bad += 1
                continue
            mine.append(time.perf_counter() - t0)
            srv.append(ms)
            miss += got != label
        with lock:
            latencies.extend(mine)
            inside.extend(srv)
            errors += bad
            wrong += miss

    threads = [threading.Thread(target=worker, args=(c[0], n)) for c, n in zip(callers, per_client)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for _, close in callers:
        close()
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else float("nan")
    return {"requests": requests, "ok": len(lat), "errors": errors, "wrong": wrong, "wall_s": round(wall, 2),
            "req_per_s": round(len(lat) / wall, 1) if wall else 0.0,
            "median_ms": round(statistics.median(lat) * 1000, 2) if lat else float("nan"),
            "p95_ms": round(p95 * 1000, 2),
            "server_ms": round(statistics.median(inside), 2) if inside and inside[0] == inside[0] else ""}


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="base-lenet5")
    ap.add_argument("--workspace", help="default: a temporary workspace seeded with the shipped baselines")
    ap.add_argument("--requests", type=int, help="timed requests per row (default 1000; --quick: 200)")
    ap.add_argument("--concurrency", type=int, default=4, help="clients of the concurrent rows (default 4)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the server runs the model")
    ap.add_argument("--threads", type=int, help="the server's torch CPU threads (default: the server's own, 1)")
    ap.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    ap.add_argument("--quick", action="store_true", help="200 requests per row, 20 warm-up, the PNG input only")
    ap.add_argument("--out", default="serve_bench", help="results file stem in bench/results (''/none: do not save)")
    args = ap.parse_args()
    requests = args.requests or (200 if args.quick else 1000)
    if not 1 <= requests <= 1_000_000 or not 1 <= args.concurrency <= 64:
        ap.error("--requests must be in 1..1,000,000 and --concurrency in 1..64")
    warmup = 20 if args.quick else 50
    command = "python " + " ".join([os.path.relpath(__file__, REPO), *sys.argv[1:]])
    load_before = load_average()
    started = datetime.now(UTC)

    from core.store.workspace import Workspace

    tmp = None
    if args.workspace:
        root = Path(args.workspace)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="serve-bench-")
        root = Path(tmp.name) / "ws"
    Workspace(root)   # seeds the shipped baselines
    images = inputs(args.quick)
    server = Server(root, args.variant, args.device, args.threads)
    rows = []
    try:
        health = server.wait()
        print(f"serving {health['variant_name']} ({health['variant_id']}) on {health['device']}: "
              f"REST :{server.port}, gRPC :{server.grpc_port}; {requests} requests per row", flush=True)
        from core.io.serve.rest import Predictor

        local = Predictor.load(root, args.variant, device=args.device)   # the same call, no network: a reference

        def in_process(d):
            return (lambda: (local.predict(d)[0].index, float("nan"))), (lambda: None)
        for name, data, ctype, label in images:
            row = {"input": f"{name} ({len(data):,} B)", "protocol": "in-process predict", "clients": 1,
                   **run_row(lambda d=data: in_process(d), label, requests, 1, warmup)}
            rows.append(row)
            print(f"  {row['input']:<22} {row['protocol']:<18} clients=1  {row['req_per_s']:>8.1f} req/s  "
                  f"median {row['median_ms']:.2f} ms  p95 {row['p95_ms']:.2f} ms", flush=True)
            protocols = [("REST raw body", lambda d=data, c=ctype: rest_caller(server.port, d, c, False, args.timeout)),
                         ("REST multipart", lambda d=data, c=ctype: rest_caller(server.port, d, c, True, args.timeout)),
                         ("gRPC", lambda d=data: grpc_caller(server.grpc_port, d, args.timeout))]
            for proto, make in protocols:
                for clients in (1, args.concurrency):
                    row = {"input": f"{name} ({len(data):,} B)", "protocol": proto, "clients": clients,
                           **run_row(make, label, requests, clients, warmup)}
                    rows.append(row)
                    print(f"  {row['input']:<22} {proto:<18} clients={clients}  {row['req_per_s']:>8.1f} req/s  "
                          f"median {row['median_ms']:.2f} ms  p95 {row['p95_ms']:.2f} ms  errors {row['errors']}",
                          flush=True)
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()
    load_after = load_average()
    cols = ["input", "protocol", "clients", "requests", "errors", "wrong", "req_per_s", "median_ms", "p95_ms",
            "server_ms", "wall_s"]
    import torch

    lines = [
        f"# Serving throughput: REST and gRPC on 127.0.0.1, batch 1 ({started:%Y-%m-%d %H:%M} UTC)", "",
        f"Command: `{command}`.", "",
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}. Server: `{' '.join(['python', *server.cmd[1:]])}` "
        f"(variant {health['variant_id']}, model on {health['device']}). "
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.", "",
        f"Each row: {requests} timed predict requests after {warmup} untimed warm-up ones, one image per request, "
        f"split over `clients` threads of this process (each with its own keep-alive HTTP connection or gRPC "
        f"channel; {args.timeout:g} s timeout per request). req/s = answered requests / wall time of the row; "
        "latency = one request as the client sees it (median, 95th percentile). `wrong`: answers whose top-1 "
        "is not the image's label. The clients share the machine's cores with the server. `in-process "
        "predict`: the same Predictor.predict (decode, preprocess, forward, top-k) called in this process, "
        "no network: what the services add is the difference. `server_ms`: median time inside the "
        "service's predict call as the server reports it (Server-Timing header, gRPC trailing metadata); "
        "with several clients it includes the wait for the model (one forward at a time) and for the cores.", "",
        "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.out and args.out != "none":
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{args.out}.md"
        path.write_text(text)
        print(f"saved {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()

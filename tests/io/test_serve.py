"""The REST and gRPC services of `python -m core serve`, with real clients on 127.0.0.1.

One server process (REST and gRPC) is started for the module on free ports, in a workspace seeded
with the shipped baselines; every bad request is sent to it before the last test checks that it
still answers and stops cleanly on SIGTERM. A few in-process checks use create_app directly.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import pytest
import torch

from core.base.paths import REPO_ROOT
from core.io.serve.grpc_gen import predict_pb2, predict_pb2_grpc
from core.io.serve.rest import MAX_BODY_BYTES, create_app, serve_instructions

ROOT = REPO_ROOT
VARIANT = "base-lenet5"
STARTUP_S = 180   # a cold torch import on a loaded 2-core machine takes tens of seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(arr) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def ws_root(tmp_path_factory):
    from core.store.workspace import Workspace

    root = tmp_path_factory.mktemp("serve") / "ws"
    Workspace(root)   # seeds the shipped baselines
    return root


@pytest.fixture(scope="module")
def samples(ws_root, fashion):
    """(png bytes, label) of the first test images the shipped lenet5 classifies correctly."""
    from core.store.workspace import Workspace

    model = Workspace(ws_root).load_model(VARIANT).eval()
    test = fashion.test
    with torch.inference_mode():
        pred = model(test.normalize(test.images[:64])).argmax(1)
    right = [i for i in range(64) if int(pred[i]) == int(test.labels[i])]
    picks = []
    for i in right:   # a few images of different classes
        if int(test.labels[i]) not in {label for _, label in picks}:
            picks.append((png(test.images[i, 0].numpy()), int(test.labels[i])))
        if len(picks) == 4:
            break
    assert len(picks) >= 3
    return picks


@pytest.fixture(scope="module")
def server(ws_root):
    port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "core", "--workspace", str(ws_root), "serve", VARIANT,
                             "--port", str(port), "--grpc-port", str(grpc_port), "--device", "cpu", "--threads", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the server exited with {proc.returncode}: {proc.stdout.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no /health after {STARTUP_S}s: {proc.stdout.read()[-2000:]}")
        time.sleep(0.25)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    with httpx.Client(base_url=url, timeout=30) as client:
        yield {"proc": proc, "url": url, "client": client, "grpc": predict_pb2_grpc.PredictorStub(channel),
               "port": port, "grpc_port": grpc_port}
    channel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


# ---------------------------------------------------------------- REST, real server

def test_health_and_model_card(server):
    c = server["client"]
    h = c.get("/health").json()
    assert h["status"] == "ok" and h["variant_id"] == VARIANT and h["classes"] == 10
    card = c.get("/model").json()
    assert card["id"] == VARIANT
    assert "arch" in card and "metrics" in card
    assert "T-shirt/top" in str(card)   # the class names are in the card


def test_predict_multipart_right_top1(server, samples):
    c = server["client"]
    for data, label in samples:
        r = c.post("/predict", files={"file": ("item.png", data, "image/png")})
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 5
        assert preds[0]["index"] == label
        assert [p["probability"] for p in preds] == sorted((p["probability"] for p in preds), reverse=True)
        assert set(preds[0]) == {"label", "index", "probability"}
    r = c.post("/predict?top_k=10", files={"file": ("item.png", samples[0][0], "image/png")})
    assert sum(p["probability"] for p in r.json()["predictions"]) == pytest.approx(1.0, abs=1e-4)


def test_predict_raw_body(server, samples):
    data, label = samples[1]
    r = server["client"].post("/predict?top_k=2", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert r.headers["server-timing"].startswith("predict;dur=")
    preds = r.json()["predictions"]
    assert len(preds) == 2 and preds[0]["index"] == label
    assert preds[0]["label"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                 "Sneaker", "Bag", "Ankle boot"][label]


@pytest.mark.parametrize("kwargs, status, words", [
    ({"files": {"file": ("notes.txt", b"this is not an image", "text/plain")}}, 400, "not an image"),
    ({"content": b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "headers": {"content-type": "image/png"}}, 400, "image"),
    ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "empty"),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
    ({"files": {"other": ("a.png", b"x", "image/png")}}, 422, "'file'"),
])
def test_bad_requests_are_4xx_with_a_message(server, kwargs, status, words):
    r = server["client"].post("/predict", **kwargs)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


@pytest.mark.parametrize("top_k", ["0", "11", "abc", "-1", ""])
def test_bad_top_k_is_422(server, samples, top_k):
    r = server["client"].post(f"/predict?top_k={top_k}", files={"file": ("a.png", samples[0][0], "image/png")})
    assert r.status_code == 422 and "top_k" in r.json()["detail"]


def test_truncated_image_is_400(server, samples):
    data = samples[0][0]
    r = server["client"].post("/predict", content=data[: len(data) // 2], headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.json()["detail"]


def test_oversized_body_is_413(server):
    # declared too big: refused from the header, nothing read (a raw socket: the body is never sent)
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                  f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
        answer = b""
        while not answer.rstrip().endswith(b"}"):   # headers and body may come in separate packets
            piece = s.recv(4096)
            if not piece:
                break
            answer += piece
    text = answer.decode(errors="replace")
    assert text.startswith("HTTP/1.1 413") and "limit" in text
    # chunked (no Content-Length): counted while it is read
    blob = os.urandom(1 << 20)

    def chunks():
        for _ in range(MAX_BODY_BYTES // len(blob) + 2):
            yield blob
    try:
        r = server["client"].post("/predict", content=chunks(), headers={"content-type": "image/png"})
    except httpx.TransportError:   # the server may close before the client has sent everything
        pass
    else:
        assert r.status_code == 413 and "limit" in r.json()["detail"]


# ---------------------------------------------------------------- gRPC, real server

def test_grpc_same_top1_as_rest(server, samples):
    stub, c = server["grpc"], server["client"]
    assert stub.Health(predict_pb2.HealthRequest(), timeout=10).variant_id == VARIANT
    for data, label in samples:
        reply = stub.Predict(predict_pb2.PredictRequest(image=data, top_k=3), timeout=10)
        rest = c.post("/predict?top_k=3", files={"file": ("a.png", data, "image/png")}).json()["predictions"]
        assert len(reply.predictions) == 3
        assert reply.predictions[0].index == rest[0]["index"] == label
        assert reply.predictions[0].label == rest[0]["label"]
        assert reply.predictions[0].probability == pytest.approx(rest[0]["probability"], rel=1e-5)
    assert len(stub.Predict(predict_pb2.PredictRequest(image=samples[0][0]), timeout=10).predictions) == 5


@pytest.mark.parametrize("request_kwargs, words", [
    ({"image": b"not an image at all"}, "not an image"),
    ({"image": b""}, "empty"),
    ({"image": b"GIF89a" + b"\0" * 10}, "image"),
])
def test_grpc_bad_image_is_invalid_argument(server, request_kwargs, words):
    with pytest.raises(grpc.RpcError) as e:
        server["grpc"].Predict(predict_pb2.PredictRequest(**request_kwargs), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in e.value.details()


def test_grpc_bad_top_k_and_oversized(server, samples):
    with pytest.raises(grpc.RpcError) as e:
        server["grpc"].Predict(predict_pb2.PredictRequest(image=samples[0][0], top_k=11), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "top_k" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        server["grpc"].Predict(predict_pb2.PredictRequest(image=b"\0" * (MAX_BODY_BYTES + 1)), timeout=30)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_alive_after_bad_requests_then_sigterm_stops(server, samples):
    """Last: the server still answers both protocols, then SIGTERM ends it cleanly."""
    data, label = samples[0]
    r = server["client"].post("/predict", files={"file": ("a.png", data, "image/png")})
    assert r.status_code == 200 and r.json()["predictions"][0]["index"] == label
    assert server["grpc"].Predict(predict_pb2.PredictRequest(image=data), timeout=10).predictions[0].index == label
    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert f"http://127.0.0.1:{server['port']}" in out and f"127.0.0.1:{server['grpc_port']}" in out
    assert "Traceback" not in out


# ---------------------------------------------------------------- in process

@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_create_app_in_process(ws_root, samples):
    from fastapi.testclient import TestClient

    app = create_app(ws_root, VARIANT, top_k=3, device="cpu", max_body_bytes=50_000)
    with TestClient(app) as c:
        data, label = samples[2]
        preds = c.post("/predict", files={"file": ("a.png", data, "image/png")}).json()["predictions"]
        assert len(preds) == 3 and preds[0]["index"] == label
        r = c.post("/predict", content=b"\0" * 60_000, headers={"content-type": "image/png"})
        assert r.status_code == 413

        def chunks():   # no Content-Length: counted while read
            for _ in range(10):
                yield b"\0" * 10_000
        r = c.post("/predict", content=chunks(), headers={"content-type": "application/octet-stream"})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        assert c.get("/health").json()["default_top_k"] == 3
        assert c.get("/nope").status_code == 404


def test_serve_cli_refuses_bad_variant_and_busy_port(ws_root, capsys):
    from core.cli.main import main

    assert main(["--workspace", str(ws_root), "serve", "no-such-variant"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "no-such-variant" in err[0]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["--workspace", str(ws_root), "serve", VARIANT, "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot listen" in err[0]


def test_serve_instructions():
    steps = serve_instructions("abc123", port=8123, grpc_port=50123)
    text = "\n".join(code for _, code in steps)
    assert "python -m core serve abc123 --host 127.0.0.1 --port 8123 --grpc-port 50123" in text
    assert "curl -F file=@" in text and "http://127.0.0.1:8123/predict" in text
    assert "127.0.0.1:50123" in text and "PredictorStub" in text
    for _, code in steps:   # the Python snippet compiles
        if code.startswith("import grpc"):
            compile(code, "snippet", "exec")
    no_grpc = serve_instructions("abc123", host="0.0.0.0", grpc_port=None)
    assert "grpc" not in "\n".join(code for _, code in no_grpc).lower()
    assert "http://127.0.0.1:8000/predict" in "\n".join(code for _, code in no_grpc)

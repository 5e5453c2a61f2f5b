"""Serve one variant: a REST service (FastAPI on uvicorn) and, beside it, gRPC (core/io/serve/grpc_service.py).

    python -m core serve VARIANT [--host 127.0.0.1] [--port 8000] [--grpc-port 50051] [--top-k 5]

REST endpoints (`create_app`):

- `POST /predict`: one image, either as the multipart field `file` (`curl -F file=@shoe.jpg`) or
  as the raw body with an image content type (`--data-binary @shoe.png -H 'Content-Type: image/png'`;
  `application/octet-stream` is taken too). Answers `{"predictions": [{"label", "index",
  "probability"}, ...]}`, the top k classes, most probable first; `?top_k=K` (1 .. number of classes).
  The image goes through `core.data.images.preprocess_image`, the same preprocessing as the Predict page.
  The `Server-Timing: predict;dur=MS` header is the time spent decoding and predicting.
- `GET /health`: `{"status": "ok", "variant_id", ...}`; `GET /model`: the variant's model card.

Every refusal is a JSON `{"detail": "one line"}` with a 4xx status: 400 for bytes that are not a
usable image (empty, truncated, a decompression bomb, ...), 413 for a body over the limit (the
declared Content-Length is checked before anything is read, and the bytes are counted while they
are read, so a chunked upload cannot exceed it either), 415 for a content type that is neither an
image nor multipart, 422 for a bad `top_k` or a form without `file`. One bad request never
affects the next: the model is loaded once, read-only, and every image error is caught per request.

The model is loaded once in eval mode and called under `torch.inference_mode()`; quantized
variants (real int8 kernels) always run on the CPU; the process's torch CPU threads are set to
`threads` (default DEFAULT_THREADS: one, see there). The
`Predictor` is shared by the REST app and the gRPC server of the same process.
"""
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.base import paths
from core.base.limits import MAX_IMAGE_BYTES
from core.data.datasets import get_info
from core.data.images import preprocess_image
from core.data.types import DatasetInfo, ImageError
from core.io.model_card import model_card
from core.measure.metrics import class_probabilities, resolve_device
from core.store.workspace import Workspace

# the largest request body: an image at the upload limit plus room for the multipart envelope
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 1_000_000
# torch intra-op threads of a server process. One: a batch-1 forward of these models gains nothing
# from more, and idle OpenMP workers spinning after each forward slow down the image decoding
# beside it (measured on the 2-core CPU under load: LeNet-5 predict 3.7 ms at 1 thread, far slower
# at 2); requests are served in parallel across threads instead.
DEFAULT_THREADS = 1
RAW_TYPES = ("application/octet-stream",)   # besides image/*: raw bytes of unknown type


class BodyTooLarge(Exception):
    """The request body went past the limit while it was being read."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than the limit of {limit:,} bytes")
        self.limit = limit


@dataclass
class Prediction:
    label: str
    index: int
    probability: float

    def to_dict(self) -> dict:
        return {"label": self.label, "index": self.index, "probability": self.probability}


def check_top_k(value: Any, num_classes: int) -> int:
    """A whole number of predictions in [1, num_classes], from an int or the text of a query."""
    try:
        k = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise ValueError(f"top_k must be a whole number from 1 to {num_classes}, got {str(value)[:40]!r}") from None
    if not 1 <= k <= num_classes:
        raise ValueError(f"top_k must be a whole number from 1 to {num_classes}, got {k}")
    return k


class Predictor:
    """One variant, loaded once, answering top-k predictions for image bytes. Thread-safe: the
    decode and preprocessing run in the caller's thread; the forward pass holds a lock (a batch-1
    forward is short, and the torch threads serve one pass at a time instead of fighting)."""

    def __init__(self, workspace, variant, model: torch.nn.Module, info: DatasetInfo, device: torch.device,
                 top_k: int = 5):
        self.workspace = workspace
        self.variant = variant
        self.model = model
        self.info = info
        self.device = device
        self.num_classes = info.num_classes
        self.top_k = min(max(1, int(top_k)), self.num_classes)
        self._lock = threading.Lock()
        self._card: dict | None = None
        self.started_at = time.time()

    @classmethod
    def load(cls, workspace_root, variant_ref: str, *, top_k: int = 5, device: str = "auto",
             threads: int | None = None) -> "Predictor":
        """Open the workspace (a path, or a Workspace), find the variant (VariantNotFound when it
        is not there) and load its model once. `device`: auto|cpu|cuda; quantized kinds on the CPU."""
        ws = workspace_root if isinstance(workspace_root, Workspace) else Workspace(workspace_root)
        variant = ws.get_variant(variant_ref)
        info = get_info(variant.dataset, ws.root)
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a whole number of at least 1, got {top_k!r}")
        if threads:
            torch.set_num_threads(int(threads))
        elif torch.get_num_threads() > DEFAULT_THREADS:
            torch.set_num_threads(DEFAULT_THREADS)
        dev = resolve_device(device)
        if variant.kind.get("quantized"):
            dev = torch.device("cpu")   # int8 kernels (fbgemm/x86) exist on the CPU only
        model = ws.load_model(variant).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model.to(dev)
        predictor = cls(ws, variant, model, info, dev, top_k)
        predictor.warm_up()
        return predictor

    def warm_up(self) -> None:
        x = torch.zeros((1, *self.info.input_shape))
        self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with self._lock:
            return class_probabilities(self.model, x.to(self.device))[0].cpu()

    def predict(self, image_bytes: bytes, top_k: int | None = None, *, filename: str = "image") -> list[Prediction]:
        """The top_k (default: the server's) most probable classes of one encoded image. Raises
        ImageError for bytes that are not a usable image, ValueError for a bad top_k."""
        k = self.top_k if top_k is None else check_top_k(top_k, self.num_classes)
        x = preprocess_image(bytes(image_bytes), self.info, filename=filename)
        probs = self._forward(x)
        values, indices = torch.topk(probs, k)
        names = self.info.class_names
        return [Prediction(names[i], int(i), float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    def health(self) -> dict:
        v = self.variant
        return {"status": "ok", "variant_id": v.id, "variant_name": v.name, "dataset": v.dataset,
                "kind": v.kind_label, "device": str(self.device), "classes": self.num_classes,
                "default_top_k": self.top_k, "uptime_s": round(time.time() - self.started_at, 1)}

    def card(self) -> dict:
        """The model card (core.io.model_card), computed once."""
        if self._card is None:
            self._card = model_card(self.workspace, self.variant)
        return self._card


# ---------------------------------------------------------------- REST

class BodyLimit:
    """ASGI middleware: a declared Content-Length over `limit` is refused (413) before the body is
    read; otherwise the body is counted as it arrives and BodyTooLarge raised past the limit."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                n = -1
            if n < 0 or n > self.limit:
                from starlette.responses import JSONResponse

                msg = (f"the request body is {n:,} bytes; the limit is {self.limit:,} bytes" if n >= 0
                       else "the Content-Length header is not a number")
                return await JSONResponse({"detail": msg}, status_code=413 if n >= 0 else 400)(scope, receive, send)
        seen = 0
        limit = self.limit

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return await self.app(scope, counted_receive, send)


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def build_app(predictor: Predictor, *, max_body_bytes: int = MAX_BODY_BYTES):
    """The FastAPI app around one loaded Predictor (create_app loads it)."""
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    v = predictor.variant
    app = FastAPI(title=f"Compression Workbench: {v.name}",
                  description=f"Predictions of variant {v.id} ({v.name}, {v.kind_label}) on {predictor.info.title} "
                              "images. POST an image to /predict.", version="1")
    app.state.predictor = predictor
    app.state.max_body_bytes = max_body_bytes

    def problem(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"detail": detail}, status_code=status)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc: BodyTooLarge):
        return problem(413, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        parts = ["{}: {}".format(".".join(str(p) for p in e.get("loc", ())[1:]) or "request", e.get("msg", ""))
                 for e in exc.errors()]
        return problem(422, "; ".join(parts)[:500] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _internal(request, exc: Exception):   # a bug: one line, never the traceback
        return problem(500, f"internal error: {type(exc).__name__}: {str(exc)[:200]}")

    @app.get("/")
    def index() -> dict:
        return {"service": "Compression Workbench prediction service", "variant_id": v.id, "variant_name": v.name,
                "endpoints": {"POST /predict": "an image (multipart field 'file', or the raw body with an image "
                                               "content type); ?top_k=K", "GET /health": "liveness",
                              "GET /model": "the model card", "GET /docs": "OpenAPI docs"}}

    @app.get("/health")
    def health() -> dict:
        return predictor.health()

    @app.get("/model")
    def model() -> dict:
        return predictor.card()

    @app.post("/predict")
    async def predict(request: Request, top_k: str | None = None):
        try:
            k = None if top_k is None else check_top_k(top_k, predictor.num_classes)
        except ValueError as e:
            return problem(422, str(e))
        ctype = _content_type(request)
        filename = "image"
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=20)
            try:
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    return problem(422, "the multipart form has no file field 'file' (curl -F file=@image.png)")
                filename = upload.filename or "image"
                data = await upload.read()
            finally:
                await form.close()
        elif ctype.startswith("image/") or ctype in RAW_TYPES:
            data = await request.body()
        else:
            return problem(415, f"unsupported content type {ctype or '(none)'!r}: send the image as the multipart "
                                "field 'file', or as the raw body with an image content type (e.g. image/png)")
        if not data:
            return problem(400, f"{filename}: the image is empty")
        t0 = time.perf_counter()
        try:
            preds = await run_in_threadpool(predictor.predict, data, k, filename=filename)
        except ImageError as e:
            return problem(400, str(e))
        ms = (time.perf_counter() - t0) * 1000
        return JSONResponse({"predictions": [p.to_dict() for p in preds], "variant_id": v.id},
                            headers={"Server-Timing": f"predict;dur={ms:.2f}"})

    app.add_middleware(BodyLimit, limit=max_body_bytes)
    return app


def create_app(workspace_root, variant_ref: str, top_k: int = 5, *, device: str = "auto", threads: int | None = None,
               max_body_bytes: int = MAX_BODY_BYTES):
    """A FastAPI app serving one variant of a workspace (a path or a Workspace). The variant is
    loaded once, here: a missing one raises VariantNotFound before any app exists. The loaded
    Predictor is `app.state.predictor` (the gRPC server of the same process shares it)."""
    predictor = Predictor.load(workspace_root, variant_ref, top_k=top_k, device=device, threads=threads)
    return build_app(predictor, max_body_bytes=max_body_bytes)


# ---------------------------------------------------------------- how to use it

def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else (f"[{host}]" if ":" in host else host)


def serve_instructions(variant_id: str, host: str = "127.0.0.1", port: int = 8000,
                       grpc_port: int | None = 50051) -> list[tuple[str, str]]:
    """(title, code) pairs: how to start the services for `variant_id` and a sample request for
    each (curl for REST; a short Python client for gRPC). Rendered by the Export page."""
    h = _client_host(host)
    start = f"python -m core serve {variant_id} --host {host} --port {port}"
    if grpc_port:
        start += f" --grpc-port {grpc_port}"
    out = [
        ("Start the service" + (" (REST and gRPC, one process; Ctrl-C stops it)" if grpc_port else " (Ctrl-C stops it)"),
         start),
        ("REST: predict an image (multipart upload)",
         f"curl -F file=@shoe.jpg 'http://{h}:{port}/predict?top_k=3'"),
        ("REST: predict from raw bytes",
         f"curl --data-binary @shoe.png -H 'Content-Type: image/png' http://{h}:{port}/predict"),
        ("REST: health and model card",
         f"curl http://{h}:{port}/health\ncurl http://{h}:{port}/model"),
    ]
    if grpc_port:
        out.append(("gRPC: predict from Python (run in the repository: stubs in core/grpc_gen, "
                    "proto in proto/predict.proto)",
                    "import grpc\n"
                    "from core.io.serve.grpc_gen import predict_pb2, predict_pb2_grpc\n\n"
                    f'with grpc.insecure_channel("{h}:{grpc_port}") as channel:\n'
                    "    stub = predict_pb2_grpc.PredictorStub(channel)\n"
                    '    image = open("shoe.png", "rb").read()\n'
                    "    reply = stub.Predict(predict_pb2.PredictRequest(image=image, top_k=3), timeout=10)\n"
                    "for p in reply.predictions:\n"
                    '    print(f"{p.label:<12} {p.probability:.3f}")'))
    return out


def repo_proto_path() -> Path:
    return paths.PROTO_FILE

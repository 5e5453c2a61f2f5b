"""The gRPC face of `python -m core serve VARIANT --grpc-port P` (grpcio; proto/predict.proto).

`make_grpc_server(predictor, host, port, max_message_bytes)` builds a server around the same
`core.io.serve.rest.Predictor` the REST app uses: `Predict` answers the top-k classes of one image,
`Health` says which variant is served. A file that is not a usable image, or a bad top_k, is
INVALID_ARGUMENT with a one-line message; a message over `max_message_bytes` is refused by grpc
itself (RESOURCE_EXHAUSTED) before it reaches the model. A reply's trailing metadata
`server-timing: predict;dur=MS` is the time spent in the predictor (as REST's Server-Timing header).
"""
from __future__ import annotations

import time
from concurrent import futures

import grpc

from core.data.types import ImageError
from core.io.serve.grpc_gen import predict_pb2, predict_pb2_grpc
from core.io.serve.rest import MAX_BODY_BYTES, Predictor


class PredictorService(predict_pb2_grpc.PredictorServicer):
    def __init__(self, predictor: Predictor):
        self.predictor = predictor

    def Predict(self, request, context):  # noqa: N802 - the proto's name
        if not request.image:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "image: the image is empty")
        error = None
        t0 = time.perf_counter()
        try:
            preds = self.predictor.predict(request.image, request.top_k or None)
        except (ImageError, ValueError) as e:    # a bad image or top_k: the caller's mistake
            error = (grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Exception as e:  # noqa: BLE001 - a bug: one line to the caller, the server goes on
            error = (grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {str(e)[:200]}")
        if error is not None:
            context.abort(*error)   # raises: outside the try so it is not caught above
        context.set_trailing_metadata((("server-timing", f"predict;dur={(time.perf_counter() - t0) * 1000:.2f}"),))
        return predict_pb2.PredictReply(
            predictions=[predict_pb2.Prediction(label=p.label, index=p.index, probability=p.probability)
                         for p in preds],
            variant_id=self.predictor.variant.id)

    def Health(self, request, context):  # noqa: N802
        h = self.predictor.health()
        return predict_pb2.HealthReply(status=h["status"], variant_id=h["variant_id"], variant_name=h["variant_name"],
                                       device=h["device"])


def make_grpc_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 50051,
                     max_message_bytes: int = MAX_BODY_BYTES, *, max_workers: int = 4,
                     max_concurrent_rpcs: int = 64) -> grpc.Server:
    """A gRPC server (not started: call .start()) bound to host:port; port 0 picks a free one,
    found afterwards in `server.bound_port`. A port that cannot be bound is a ValueError."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc-predict"),
                         maximum_concurrent_rpcs=max_concurrent_rpcs,
                         options=[("grpc.max_receive_message_length", max_message_bytes),
                                  ("grpc.max_send_message_length", max_message_bytes),
                                  ("grpc.so_reuseport", 0)])
    predict_pb2_grpc.add_PredictorServicer_to_server(PredictorService(predictor), server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        bound, why = 0, str(e)
    else:
        why = ""
    if not bound:
        server.stop(None)
        raise ValueError(f"cannot listen for gRPC on {address}: the port is in use or not allowed {why}".strip())
    server.bound_port = bound
    return server

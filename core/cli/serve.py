"""The `serve` command of the CLI: serve one variant over REST (FastAPI on uvicorn) and, with
--grpc-port, over gRPC in the same process, until Ctrl-C or SIGTERM.

    python -m core serve VARIANT [--host 127.0.0.1] [--port 8000] [--grpc-port P] [--top-k K]
                                 [--device auto|cpu|cuda] [--threads N] [--access-log]

The variant is looked up and loaded, and both ports bound, before anything serves: a missing
variant or a port in use is one `error:` line and exit status 2. `core.cli.main` finds this module
through its `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

import signal
import socket
import sys

from core.cli.common import whole
from core.io.serve.rest import Predictor, build_app


class _Stop(Exception):
    """SIGTERM/SIGINT after uvicorn's graceful shutdown (it re-raises the signal it caught)."""


def add_commands(sub) -> None:
    sp = sub.add_parser("serve", help="serve a variant: REST (POST /predict, GET /health, GET /model) and, "
                                      "with --grpc-port, gRPC (proto/predict.proto)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    sp.add_argument("--port", type=whole(0, 65_535), default=8000, help="REST port (default 8000)")
    sp.add_argument("--grpc-port", type=whole(0, 65_535), metavar="P", help="also serve gRPC on this port")
    sp.add_argument("--top-k", type=whole(1, 1000), default=5, help="predictions per answer by default (5)")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="where the model runs (quantized variants: always the CPU)")
    sp.add_argument("--threads", type=whole(1, 256), help="torch CPU threads of the model (default 1: best for batch 1)")
    sp.add_argument("--access-log", action="store_true", help="log every request")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and
    # without it a keep-alive client waits out Nagle + delayed ACK (~40 ms) on every response
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)


def cmd_serve(args, ws_factory) -> dict:
    import uvicorn

    ws = ws_factory()
    variant = ws.get_variant(args.variant)          # VariantNotFound: exit 2 before anything starts
    predictor = Predictor.load(ws, variant.id, top_k=args.top_k, device=args.device, threads=args.threads)
    app = build_app(predictor)
    sock = _bind(args.host, args.port)
    grpc_server = None
    try:
        if args.grpc_port is not None:
            from core.io.serve.grpc_service import make_grpc_server  # loads grpc: only when --grpc-port asks for it

            grpc_server = make_grpc_server(predictor, args.host, args.grpc_port)
        port = sock.getsockname()[1]
        h = _url_host(args.host)
        print(f"serving {variant.name} ({variant.id}, {variant.kind_label}) on {predictor.device}", flush=True)
        print(f"  REST  http://{h}:{port}  (POST /predict, GET /health, GET /model, docs at /docs)", flush=True)
        if grpc_server is not None:
            grpc_server.start()
            print(f"  gRPC  {h}:{grpc_server.bound_port}  (proto/predict.proto: Predictor.Predict, Predictor.Health)",
                  flush=True)
        print("Ctrl-C stops it", flush=True)
        config = uvicorn.Config(app, log_level="info" if args.access_log else "warning", access_log=args.access_log,
                                limit_concurrency=256, timeout_keep_alive=10, lifespan="off")
        server = uvicorn.Server(config)

        def stop(signum, frame):
            raise _Stop

        old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[sock])
        except (_Stop, KeyboardInterrupt):
            pass
        finally:
            for s, h_ in old.items():
                signal.signal(s, h_)
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait(5)
        sock.close()
    print("stopped", file=sys.stderr, flush=True)
    return {"served": variant.id, "host": args.host, "port": args.port, "grpc_port": args.grpc_port}


COMMANDS = {"serve": cmd_serve}

"""Regenerate the committed gRPC stubs in core/io/serve/grpc_gen/ from proto/predict.proto.

    .venv/bin/python scripts/gen_grpc.py

grpc_tools writes `import predict_pb2` into predict_pb2_grpc.py (a top-level import); the stubs
live in the package core.io.serve.grpc_gen, so that line is rewritten to a relative import; each file is
marked `# ruff: noqa` (generated code).
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO / "proto"
OUT = REPO / "core" / "io" / "serve" / "grpc_gen"


def generate() -> list[Path]:
    from grpc_tools import protoc

    OUT.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(["grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={OUT}", f"--pyi_out={OUT}",
                      f"--grpc_python_out={OUT}", str(PROTO_DIR / "predict.proto")])
    if rc != 0:
        raise SystemExit(f"protoc failed with status {rc}")
    grpc_file = OUT / "predict_pb2_grpc.py"
    text = grpc_file.read_text()
    text = re.sub(r"^import predict_pb2 as", "from . import predict_pb2 as", text, flags=re.M)
    grpc_file.write_text(text)
    files = [OUT / "predict_pb2.py", OUT / "predict_pb2.pyi", grpc_file]
    for f in files:   # generated: not held to the repo's lint rules
        f.write_text("# ruff: noqa\n" + f.read_text())
    return files


if __name__ == "__main__":
    for p in generate():
        print(p.relative_to(REPO))
    sys.exit(0)

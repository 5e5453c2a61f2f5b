"""The reload check's fresh process: load every exported file named in a spec, as a user would
(safetensors + build_from_arch, the compact loader, onnxruntime, the recipe parser), run the test
inputs, and write the logits to a report the parent compares.

    python -m core.io.export.verify verify SPEC.json      (started by core.io.export.pipeline, never by hand)
"""
from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

from core.io.export.formats import CARD_FILE, LOADER_FILE
from core.models.registry import build_from_arch
from core.tasks.recipe_replay import parse_recipe


def _verify_safetensors(path: str, x):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[meta["compute_dtype"]]
    model = build_from_arch(json.loads(meta["arch"])).to(dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()(x.to(dtype)).float()


def _verify_compact(path: str, loader: str, x):
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_compact", loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(path)(x).float()


def _verify_onnx(path: str, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    import torch

    return torch.from_numpy(sess.run(["logits"], {"input": x.numpy()})[0]).float()


def _verify_recipe(path: str) -> dict:
    doc = json.loads(Path(path).read_text())
    out = {"recipe": doc.get("recipe")}
    try:
        parse_recipe(doc)
    except ValueError as e:
        out["replay_note"] = f"python -m core replay cannot replay it: {e}"
    return out


def _verify_one(fmt: str, path: str, x, loader: str | None = None) -> dict:
    import torch

    try:
        with torch.no_grad():
            if fmt == "recipe":
                return _verify_recipe(path)
            if fmt == "safetensors":
                y = _verify_safetensors(path, x)
            elif fmt == "compact":
                y = _verify_compact(path, loader, x)
            else:
                y = _verify_onnx(path, x)
        return {"logits": y.tolist()}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which refuses the file
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}


def verify_main(spec_path: str) -> int:
    """Entry point of the fresh process: load every file named in the spec, run the inputs."""
    import torch
    from safetensors.torch import load_file

    spec = json.loads(Path(spec_path).read_text())
    x = load_file(spec["inputs"])["x"]
    checks = []
    for c in spec["checks"]:
        if c["format"] != "bundle":
            checks.append(_verify_one(c["format"], c["path"], x, c.get("loader")))
            continue
        with tempfile.TemporaryDirectory() as d:
            with zipfile.ZipFile(c["path"]) as z:
                z.extractall(d)
            json.loads((Path(d) / CARD_FILE).read_text())   # the card must parse
            members = []
            for m in c["members"]:
                paths = [str(Path(d) / n) for n in m["names"]]
                loader = next((p for p in paths if p.endswith(LOADER_FILE)), None)
                members.append(_verify_one(m["format"], paths[0], x, loader))
            checks.append({"members": members})
    Path(spec["report"]).write_text(json.dumps({"checks": checks, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "verify":
        sys.exit(verify_main(sys.argv[2]))
    print("usage: python -m core.io.export.verify verify SPEC.json  (used by core.io.export.pipeline; "
          "see python -m core export --help)", file=sys.stderr)
    sys.exit(2)

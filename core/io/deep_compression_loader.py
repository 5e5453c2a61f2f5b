"""Restore a Deep Compression file (weight-shared, packed or Huffman-coded) into its model.

    python -m core.io.deep_compression_loader FILE [--predict N]

The file is data only (safetensors with a JSON header): its arch rebuilds the registered model,
its codebooks, codes and relative indices are decoded within the bounds of `core.base.limits`
(`core.formats.shared`). With `--predict N` the first N test images of the file's dataset are
classified and the predicted classes printed as one JSON line (with the accuracy on them).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch.nn as nn

from core.base.limits import FormatError
from core.compress.quant.files import model_from_bytes
from core.data.datasets import cached_dataset
from core.formats.encoding import read_metadata


def load(path: str | Path) -> nn.Module:
    """The model (CPU, eval mode) stored in a Deep Compression file."""
    data = Path(path).read_bytes()
    meta = read_metadata(data)
    try:
        arch = json.loads(meta["arch"])
    except (KeyError, ValueError):
        raise FormatError("the file names no architecture (metadata 'arch')") from None
    return model_from_bytes(arch, data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.io.deep_compression_loader", description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--predict", type=int, default=0, help="classify the first N test images")
    args = ap.parse_args(argv)
    try:
        model = load(args.file)
    except (OSError, FormatError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = {"params": sum(p.numel() for p in model.parameters()),
           "nonzero": sum(int(p.count_nonzero()) for p in model.parameters())}
    if args.predict:
        import torch

        meta = read_metadata(Path(args.file).read_bytes())
        test = cached_dataset(meta.get("dataset", "fashion-mnist")).test
        preds, labels = [], []
        with torch.no_grad():
            for x, y in test.batches(1000):
                preds += model(x).argmax(1).tolist()
                labels += y.tolist()
                if len(preds) >= args.predict:
                    break
        preds, labels = preds[:args.predict], labels[:args.predict]
        out |= {"predictions": preds, "accuracy": sum(p == t for p, t in zip(preds, labels)) / len(preds)}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Trained weight sharing (Deep Compression, Han, Mao and Dally, ICLR 2016, section 3).

Per conv/linear layer, the NON-ZERO weights are clustered by 1-D k-means into 2^bits - 1 centroids
(linear initialisation between the smallest and largest weight, as the paper found best); code 0
is the value 0, so pruned zeros stay zero. The centroids are then fine-tuned: the gradient of every
weight sharing a centroid is summed into it (the paper's eq. 3), biases left as they are.
No workspace, tasks or jobs here.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

_SHARED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class SharedLayer:
    name: str              # the weight's state_dict key, e.g. "fc1.weight"
    module: nn.Module
    bits: int
    codebook: torch.Tensor  # float32 [2^bits]; entry 0 is 0.0
    codes: torch.Tensor     # uint8, the weight's shape; 0 where the weight is zero

    def weight(self) -> torch.Tensor:
        return self.codebook[self.codes.long()]


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(centroids [k], assignment) of 1-D `values`, linear initialisation; exact nearest centroid
    by bucketing at the midpoints. Empty clusters keep their place."""
    v = values.detach().float().reshape(-1)
    lo, hi = float(v.min()), float(v.max())
    c = torch.linspace(lo, hi, k) if k > 1 else torch.tensor([v.mean().item()])
    assign = torch.zeros(len(v), dtype=torch.long)
    for _ in range(iters):
        c, _ = torch.sort(c)
        mids = (c[1:] + c[:-1]) / 2
        new = torch.bucketize(v, mids)
        sums = torch.zeros(k).index_add_(0, new, v)
        counts = torch.zeros(k).index_add_(0, new, torch.ones_like(v))
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        if torch.equal(new, assign):
            break
        assign = new
    return c, assign


def share_layer(name: str, module: nn.Module, bits: int, iters: int = 30) -> SharedLayer:
    """Cluster the non-zero weights of `module` into 2^bits - 1 centroids (code 0 = the zero)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be from 1 to 8, got {bits!r}")
    w = module.weight.detach().cpu().float()
    nz = w != 0
    codebook = torch.zeros(1 << bits)
    codes = torch.zeros(w.shape, dtype=torch.uint8)
    if bool(nz.any()):
        c, assign = kmeans_1d(w[nz], (1 << bits) - 1, iters)
        codebook[1:] = c
        codes[nz] = (assign + 1).to(torch.uint8)
    return SharedLayer(name + ".weight", module, bits, codebook, codes)


def shared_layers(model: nn.Module, bits_conv: int, bits_fc: int, iters: int = 30) -> list[SharedLayer]:
    out = []
    for name, m in model.named_modules():
        if isinstance(m, _SHARED) and isinstance(getattr(m, "weight", None), torch.Tensor):
            out.append(share_layer(name, m, bits_fc if isinstance(m, nn.Linear) else bits_conv, iters))
    return out


def apply_shared_(layers: list[SharedLayer]) -> None:
    with torch.no_grad():
        for s in layers:
            s.module.weight.copy_(s.weight().to(s.module.weight.device))


def finetune_centroids_(model: nn.Module, layers: list[SharedLayer], train_split, *, epochs: int, lr: float,
                        batch_size: int = 128, seed: int = 0, device: str = "cpu", should_stop=lambda: False,
                        on_epoch=lambda epoch, loss: None) -> None:
    """Train only the centroids: each step the model's weights are the codebooks indexed by the
    codes; the gradient of every weight is summed into its centroid (code 0, the zero, is fixed)."""
    model.to(device).train()
    for p in model.parameters():
        p.requires_grad_(False)
    for s in layers:
        s.module.weight.requires_grad_(True)
    centroids = [s.codebook.clone().to(device).requires_grad_(False) for s in layers]
    codes = [s.codes.long().reshape(-1).to(device) for s in layers]
    opt_state = [torch.zeros_like(c) for c in centroids]   # momentum buffers
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        total, n = 0.0, 0
        for x, y in train_split.batches(batch_size, shuffle=True, generator=g, device=device):
            if should_stop():
                break
            with torch.no_grad():
                for s, c, k in zip(layers, centroids, codes):
                    s.module.weight.copy_(c[k].reshape(s.module.weight.shape))
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            with torch.no_grad():
                for s, c, k, buf in zip(layers, centroids, codes, opt_state):
                    grad = torch.zeros_like(c).index_add_(0, k, s.module.weight.grad.reshape(-1))
                    grad[0] = 0.0
                    buf.mul_(0.9).add_(grad)
                    c.sub_(lr * buf)
            total += float(loss.detach()) * len(y)
            n += len(y)
        on_epoch(epoch + 1, total / max(n, 1))
    for s, c in zip(layers, centroids):
        c = c.cpu()
        c[0] = 0.0
        s.codebook = c
    model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    apply_shared_(layers)

"""core.base.cache: the preview cache is bounded by the memory its values hold, not by a count."""
from __future__ import annotations

import torch
import torch.nn as nn

from core.base.cache import MemoryBoundedCache, tensor_bytes


def test_tensor_bytes_counts_each_storage_once():
    m = nn.Linear(100, 10)                          # 1,010 float32 parameters
    assert tensor_bytes(m) == 1010 * 4
    t = torch.zeros(1000)
    assert tensor_bytes({"a": t, "b": t, "view": t[:10]}) == 4000   # one storage, shared
    assert tensor_bytes(object()) == 0


def test_big_values_evict_least_recently_used_and_small_ones_stay_many():
    cache = MemoryBoundedCache(max_bytes=10_000)
    for i in range(100):                             # a hundred small previews fit
        cache.put(("small", i), torch.zeros(20))    # 80 bytes each
    assert len(cache) == 100 and cache.total_bytes == 8000
    cache.get(("small", 0))                          # recently used: survives the next eviction
    cache.put("big", torch.zeros(1000))              # 4,000 bytes: the oldest small ones go
    assert cache.total_bytes <= 10_000 and "big" in cache and ("small", 0) in cache and ("small", 1) not in cache
    cache.put("huge", torch.zeros(10_000))           # larger than the whole bound: returned, never kept
    assert "huge" not in cache and cache.total_bytes <= 10_000


def test_get_or_compute_computes_once():
    cache = MemoryBoundedCache(max_bytes=1_000_000)
    calls = []
    for _ in range(3):
        value = cache.get_or_compute("k", lambda: calls.append(1) or nn.Linear(4, 4))
    assert len(calls) == 1 and isinstance(value, nn.Linear)

"""A least-recently-used cache bounded by the memory its values hold, not by their count, that
computes each key once however many threads ask for it at the same moment.

A count bound does not fit previews: 24 previews of a 45 MB resnet18 are a gigabyte, 24 of
LeNet-5 a few megabytes. Each prune or quantization preview holds a changed copy of a model, so
previews are kept here, the least recently used evicted until the total stays under `max_bytes`.
Single-flight: a class told "now try 90%" sends thirty identical requests at once; the first
computes, the others wait for it and read its result. Thread-safe: a server shares one instance.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import torch
import torch.nn as nn

_MISSING = object()


def tensor_bytes(obj: Any, _seen: set | None = None) -> int:
    """Bytes of the tensors reachable from `obj` (modules, tensors, dicts, lists, dataclass-like
    objects' attributes), each storage counted once. A module's quantized weights count too: torch.ao
    packs them outside its parameters and buffers, where only its state_dict reaches them. Small
    Python objects are not counted."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        if ("storage", storage.data_ptr()) in seen:   # a view of a tensor already counted
            return 0
        seen.add(("storage", storage.data_ptr()))
        return storage.nbytes()
    if isinstance(obj, nn.Module):
        own = [*obj.parameters(), *obj.buffers()]
        return tensor_bytes(own, seen) + tensor_bytes(list(obj.state_dict(keep_vars=True).values()), seen)
    if isinstance(obj, dict):
        return sum(tensor_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple, set)):
        return sum(tensor_bytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(v, seen) for v in vars(obj).values())
    return 0


class MemoryBoundedCache:
    def __init__(self, max_bytes: int, size_of: Callable[[Any], int] = tensor_bytes):
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}   # key -> held while one thread computes it
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.total_bytes = 0

    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def discard(self, key: Hashable) -> None:
        """Forget `key` (a value that must not be served again, e.g. a timing that did not settle)."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.total_bytes -= old[1]

    def put(self, key: Hashable, value: Any) -> Any:
        """Keep `value` (unless it alone exceeds the bound), evicting the least recently used."""
        size = self._size_of(value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.total_bytes -= old[1]
            if size > self.max_bytes:
                return value
            self._items[key] = (value, size)
            self.total_bytes += size
            while self.total_bytes > self.max_bytes and self._items:
                _, (_, evicted) = self._items.popitem(last=False)
                self.total_bytes -= evicted
        return value

    def get_or_compute(self, key: Hashable, compute: Callable[[], Any], *,
                       slots: threading.Semaphore | None = None) -> Any:
        """The kept value of `key`, else `compute()`'s, kept. Threads asking for the same key at
        once wait for the one that computes it; with `slots`, the computation holds one of them
        (a server computing one preview per core serves its sessions first come, first served)."""
        hit = self.get(key, _MISSING)
        if hit is not _MISSING:
            return hit
        with self._lock:
            mine = self._computing.setdefault(key, threading.Lock())
        try:
            with mine:
                hit = self.get(key, _MISSING)          # computed while this thread waited
                if hit is not _MISSING:
                    return hit
                with slots if slots is not None else contextlib.nullcontext():
                    return self.put(key, compute())
        finally:
            with self._lock:
                if self._computing.get(key) is mine and not mine.locked():
                    del self._computing[key]

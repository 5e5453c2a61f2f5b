"""The shared shape of step configs: frozen dataclasses that round-trip through plain dicts."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, Self


class DictConfig:
    """Mixin for config dataclasses: `to_dict()` for JSON (recipes, job configs) and
    `from_dict()` that ignores unknown keys, so recipes written by other versions still load.
    Subclasses with nested configs or tuples override `to_dict`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})

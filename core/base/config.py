"""The shared shape of step configs: frozen dataclasses that validate themselves and round-trip
through plain dicts (recipes and job configs are JSON)."""
from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from typing import Any, Self


def check_fraction(name: str, value: Any, *, upper_inclusive: bool = False) -> float:
    """`value` as a float in [0, 1) (or [0, 1] with `upper_inclusive`); ValueError naming `name` otherwise."""
    upper = "1]" if upper_inclusive else "1)"
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, {upper}, got {value!r}") from None
    ok = math.isfinite(f) and (0 <= f <= 1 if upper_inclusive else 0 <= f < 1)
    if not ok:
        raise ValueError(f"{name} must be in [0, {upper}, got {value!r}")
    return f


def plain(value: Any) -> Any:
    """Nested configs to dicts and tuples to lists, so the result is JSON."""
    if isinstance(value, DictConfig):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


class DictConfig:
    """Mixin for config dataclasses: `to_dict()` gives JSON (nested configs become dicts, tuples
    lists) and `from_dict()` ignores unknown keys, so recipes written by other versions still load.
    Nested config fields and tuple fields are rebuilt by the subclass's `__post_init__`."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Self:
        if not isinstance(d, dict):
            raise ValueError(f"{cls.__name__} needs a dict of settings, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def coerce(cls, value: Any) -> Self:
        """`value` as this config: itself, or built from a dict (a nested config field)."""
        if isinstance(value, cls):
            return value
        return cls.from_dict(value)

"""Small readers of an AppTest run, shared by the page tests."""
from __future__ import annotations

import json


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]

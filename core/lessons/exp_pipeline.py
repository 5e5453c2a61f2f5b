"""Live experiments of the Learn lesson 7: the full pipeline (prune, recover, quantize, encode)."""
from __future__ import annotations

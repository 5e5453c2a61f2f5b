"""Live experiments of the Learn lessons 1-3: which weights go, why 90% sparse is not faster, not all layers are equal."""
from __future__ import annotations

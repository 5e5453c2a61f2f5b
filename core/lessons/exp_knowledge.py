"""Live experiments of the Learn lessons 5-6: dark knowledge, recovery."""
from __future__ import annotations

"""Live experiments of the Learn lesson 4: from float to int8."""
from __future__ import annotations

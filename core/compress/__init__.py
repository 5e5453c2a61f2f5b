"""Compression algorithms only (pruning, quant, sharing, distill): no store, no tasks, no runners.
Imports core.base, core.data, core.models, core.formats and core.measure."""

"""Importing this module registers every built-in lesson experiment (one module per group)."""
from . import exp_knowledge, exp_pipeline, exp_pruning, exp_quant, exp_recovery  # noqa: F401

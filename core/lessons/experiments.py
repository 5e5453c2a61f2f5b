"""Importing this module registers every built-in lesson experiment (one module per group)."""
from core.lessons import exp_knowledge, exp_pipeline, exp_pruning, exp_quant, exp_recovery  # noqa: F401

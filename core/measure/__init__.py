"""Measuring models: metrics with their fixed names, the one training loop, Pareto rows.
Imports core.base, core.data, core.models and core.formats."""

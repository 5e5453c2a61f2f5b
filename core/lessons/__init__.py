"""The Learn section's engine: lesson files (lessons/*.md) parsed into Lesson objects (content.py),
the live experiments they name (registry.py, common.py, the exp_*.py modules, run by experiments.py).
Imports any core package but core.cli; experiments import common and registry, never each other."""

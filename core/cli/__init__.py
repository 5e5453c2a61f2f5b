"""The command line, python -m core: one module per group of commands, helpers in common.
Imports any core package."""

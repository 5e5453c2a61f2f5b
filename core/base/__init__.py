"""The foundation: configs, cancellation, units, limits, kinds, ratios, paths, errors, processes.
Imports no other core package (only the standard library, torch and numpy)."""

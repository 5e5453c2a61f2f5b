"""The Ray runner: jobs as Ray actors, the per-layer scan and sweep trials fanned out over a cluster.
Part of core.run; Ray itself is imported only inside functions (a heavy optional dependency)."""

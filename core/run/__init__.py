"""Running jobs: the queue (submit, dispatch, cancel, reap), runners by name, the worker side, Ray.
Imports core.tasks and everything left of it; never core.io."""

"""Download formats of a variant, each reload-verified in a fresh process before it is offered.
Part of core.io: imports core.tasks and what lies below it, never core.run nor core.io.serve."""

"""Download formats of a variant, each reload-verified in a fresh process before it is offered.
Part of core.io."""

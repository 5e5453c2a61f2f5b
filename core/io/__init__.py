"""Facing the outside: verified exports and the REST/gRPC services.
Imports core.tasks and everything left of it; never core.run."""

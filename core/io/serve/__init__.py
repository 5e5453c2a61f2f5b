"""Serving one variant: REST (FastAPI) and gRPC, sharing one predictor.
Part of core.io: imports core.tasks and what lies below it, never core.run nor core.io.export."""

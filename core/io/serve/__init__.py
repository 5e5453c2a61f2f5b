"""Serving one variant: REST (FastAPI) and gRPC, sharing one predictor.
Part of core.io."""

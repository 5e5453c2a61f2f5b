"""Generated gRPC stubs for proto/predict.proto (committed; regenerate: scripts/gen_grpc.py)."""

"""Protobuf and gRPC stubs generated from proto/quiver/v1 (scripts/gen_protos.py)."""

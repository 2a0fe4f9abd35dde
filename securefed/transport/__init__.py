"""gRPC over mutual TLS with a checked binary envelope; protocol-agnostic (see server.py for the design)."""

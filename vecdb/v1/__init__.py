"""Generated gRPC code for the vecdb.v1 API; regenerate with ``proto/generate.sh``, never edit."""

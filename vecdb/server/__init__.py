"""The vecdb gRPC server: ``python -m vecdb.server`` / ``vecdb serve`` (see ``app.serve``)."""

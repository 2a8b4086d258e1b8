"""Observability: structured logs and metrics."""

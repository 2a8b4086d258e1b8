"""The load generator: raw-socket SSE clients on uvloop, in several worker processes."""

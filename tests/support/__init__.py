"""Test support: real gateway processes and real SSE clients over sockets."""

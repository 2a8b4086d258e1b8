"""The HTTP surface: the only layer that knows a web framework."""

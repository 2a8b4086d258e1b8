"""Herald: a real-time event gateway that pushes domain events to browsers over SSE."""

__version__ = "0.1.0"

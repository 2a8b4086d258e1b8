"""The event model: the ``SSEMessage`` envelope, name rules and payload models. Pure."""

"""Where events come from: each source feeds the bus through the adapter."""

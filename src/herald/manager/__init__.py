"""Live connections on this node: routing, replay seam, queues, backpressure, heartbeats."""

"""The event log every gateway node reads: ordered, replayable, bounded."""

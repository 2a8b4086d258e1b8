"""The servers Herald is measured against, with the same endpoints and wire format."""

"""Who is asking: JWT verification, short-lived stream tokens, resource grants."""

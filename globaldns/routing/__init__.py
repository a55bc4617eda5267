"""Routing: which endpoints a client gets (policy), ordered by locality tier (locality)."""

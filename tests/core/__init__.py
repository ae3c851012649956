"""Tests of the pure core (no event loop)."""

"""Benchmarks: tilec against its peers in the same run, as ratios (not tests)."""

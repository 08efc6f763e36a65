"""Autotuning: search spaces, strategies, evaluators, the tuning database and cost models."""

"""Reproducible experiments behind the numbers the project reports (not run by tests)."""

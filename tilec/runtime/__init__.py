"""Runtime: array interop, the compiled-kernel cache and kernel launch."""

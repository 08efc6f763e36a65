"""The tuning store: tuned configs keyed by op, backend, device, dtype and shape bucket.
Op calls read it (``database.lookup``); the tuner (``autotune``) writes it."""

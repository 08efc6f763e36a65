"""The tuning store lives in the core (``tilec.tuning.keys``), where op calls read it without
importing the tuner; this name is the same module, kept for existing imports."""
import sys

from tilec.tuning import keys

sys.modules[__name__] = keys

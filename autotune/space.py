"""Search spaces live in the core (``tilec.space``); this name stays for existing imports."""
from tilec.space import Constraint, Param, Space

__all__ = ["Constraint", "Param", "Space"]

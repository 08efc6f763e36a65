"""The one exception users see from the compiler: it names where and what."""
from __future__ import annotations


class TilecError(Exception):
    """A kernel, a config or an input that tilec cannot accept.

    ``where`` is ``"file:line"`` when the problem is in kernel source.
    """

    def __init__(self, message: str, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class ConfigError(TilecError):
    """A tile config that does not fit the kernel or the target."""


class InputError(TilecError):
    """Arrays handed to an op that it cannot take (shape, dtype, layout, device)."""

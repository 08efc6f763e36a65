"""How a ``Space`` looks to Optuna.

A parameter whose choices are all numbers becomes an ordinal: an integer index into its
sorted choices, so model-based samplers (TPE, CMA-ES) learn that 64 lies between 32 and
128. Other parameters (strings, booleans, None) stay categorical. The decoded config is
what evaluators see and what the database stores (as the trial's ``config`` attribute).
"""
from __future__ import annotations

import json

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from tilec.space import Param, Space


def _is_ordinal(p: Param) -> bool:
    return len(p.choices) > 1 and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)


def _ordered(p: Param) -> list:
    return sorted(p.choices) if _is_ordinal(p) else list(p.choices)


def distributions(space: Space) -> dict[str, BaseDistribution]:
    out = {}
    for p in space.params:
        if _is_ordinal(p):
            out[p.name] = IntDistribution(0, len(p.choices) - 1)
        else:
            out[p.name] = CategoricalDistribution([_categorical_value(c) for c in p.choices])
    return out


def _categorical_value(c):
    # Optuna categorical choices must be None, bool, int, float or str.
    return c if isinstance(c, (type(None), bool, int, float, str)) else repr(c)


def decode(space: Space, params: dict) -> dict:
    """Optuna params -> config."""
    cfg = {}
    for p in space.params:
        v = params[p.name]
        if _is_ordinal(p):
            cfg[p.name] = _ordered(p)[int(v)]
        else:
            cfg[p.name] = next(c for c in p.choices if _categorical_value(c) == v)
    return cfg


def encode(space: Space, config: dict) -> dict:
    """Config -> Optuna params (for enqueuing seeds)."""
    out = {}
    for p in space.params:
        v = config[p.name]
        out[p.name] = _ordered(p).index(v) if _is_ordinal(p) else _categorical_value(v)
    return out


def config_id(config: dict) -> str:
    """Canonical text of a config, to recognise one already evaluated."""
    return json.dumps(config, sort_keys=True, default=repr)

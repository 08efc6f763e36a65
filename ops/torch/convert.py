"""Whole-model conversion: swap every eligible ``nn.Linear`` of a model for a tilec layer."""
from __future__ import annotations

import fnmatch
from typing import Callable, Iterable, Optional

import torch

from ops.torch.linear import Linear
from ops.torch.quant_linear import METHODS, QuantLinear, check_eligible
from tilec.errors import InputError


def _swap(model: torch.nn.Module, make: Callable[[str, torch.nn.Linear], Optional[torch.nn.Module]],
          skip: Iterable[str], kinds: tuple = (torch.nn.Linear,)) -> list[str]:
    """Replace each layer whose exact type is one of ``kinds`` (so no other subclass of
    ``nn.Linear``) and whose qualified name matches none of the ``skip`` patterns (fnmatch, e.g.
    ``"*classifier*"``) by ``make(name, linear)`` (None keeps it); returns the names replaced."""
    patterns = [skip] if isinstance(skip, str) else list(skip)
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) in kinds and not any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    done = []
    for name, linear in targets:
        layer = make(name, linear)
        if layer is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
        done.append(name)
    return done


def linear_model(model: torch.nn.Module, skip: Iterable[str] = ()) -> list[str]:
    """Swap every ``nn.Linear`` of ``model`` (in place) for a tilec ``Linear`` sharing its
    parameters; returns the names of the layers swapped. A model with a bare ``nn.Linear``
    at the root is converted by ``Linear.from_linear`` instead."""
    return _swap(model, lambda name, linear: Linear.from_linear(linear), skip)


def quantize_model(model: torch.nn.Module, method: str = "int4", group_size: int = 128,
                   skip: Iterable[str] = (), **kwargs) -> list[str]:
    """Swap every eligible ``nn.Linear`` of ``model`` (in place) for a ``QuantLinear``
    (``method`` "int4", "int8" or "lut"; ``kwargs`` as for ``QuantLinear.from_linear``).
    Eligible: its in_features is a multiple of ``group_size`` (and out_features even for int4)
    and its name matches no ``skip`` pattern; other layers stay float. tilec's float ``Linear``
    layers (``linear_model``'s) are quantized too. Returns the names swapped."""
    def make(name, linear):
        if check_eligible(linear.in_features, linear.out_features, method, group_size, kwargs.get("act_quant")):
            return None
        return QuantLinear.from_linear(linear, method, group_size=group_size, **kwargs)
    reason = check_eligible(group_size, 2, method, group_size, kwargs.get("act_quant"))
    if reason:
        raise InputError(f"quantize_model: {reason}")
    return _swap(model, make, skip, (torch.nn.Linear, Linear))

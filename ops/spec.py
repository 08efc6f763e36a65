"""What every op declares, so the tuner, the benchmarks, the cost models and `tilec show`
can treat all ops alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tilec.space import Space


@dataclass
class OpSpec:
    name: str
    doc: str
    kernels: dict[str, Any]                              # name -> tilec.Kernel
    shape_names: tuple[str, ...]                         # e.g. ("M", "N", "K")
    space: Callable[[str], Space]                        # backend -> tunable space
    default_config: Callable[[dict, str], dict]          # (shape, backend) -> config
    make_inputs: Callable[[dict, str, Any], dict]        # (shape, dtype, rng) -> named NumPy arrays
    run: Callable[..., Any]                              # (inputs, config=, backend=) -> output
    reference: Callable[[dict], Any]                     # inputs -> NumPy result (float64 where it matters)
    flops: Callable[[dict], float]                       # shape -> floating-point ops
    bytes: Callable[[dict, str], float]                  # (shape, dtype) -> minimal DRAM traffic
    launch_ir: Callable[[dict, str, dict], Any] | None = None  # (shape, dtype, config) -> (kernel, IR Function, grid)
    dtypes: tuple[str, ...] = ("float32",)
    tolerance: Callable[[str], tuple[float, float]] = lambda dtype: (1e-4, 1e-4)  # (rtol, atol)
    extra: dict = field(default_factory=dict)

    def typical_shape(self) -> dict:
        """A representative problem: the op's ``extra["compile_shape"]``, else 1024 for every
        dimension (which e.g. attention's head size could not take)."""
        return dict(self.extra.get("compile_shape") or {n: 1024 for n in self.shape_names})

    def configs_like(self, default: dict, backend: str):
        """The configs of ``backend``'s space that keep the parameters the shape decides
        (``extra["fixed_by_shape"]``, e.g. the padded head size) at ``default``'s values."""
        fixed = self.extra.get("fixed_by_shape", ())
        return (c for c in self.space(backend).configs() if all(c[k] == default[k] for k in fixed))

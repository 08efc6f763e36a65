"""What every backend provides. Renderers are pure (IR -> text); runners compile and launch."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import ConfigError
from ..ir import Function


@dataclass(frozen=True)
class Option:
    """A backend knob that may appear in a config next to the kernel's constexprs."""
    default: Any
    choices: tuple = ()
    doc: str = ""


@dataclass
class Compiled:
    """A launchable artefact: ``run(grid, args)``; ``source`` is what was compiled."""
    source: str
    run: Callable[[tuple[int, int, int], Sequence[Any]], None]
    info: dict = field(default_factory=dict)


def resolve_options(backend: str, options: dict[str, Option], given: dict[str, Any], kernel_name: str,
                    constexprs: Sequence[str]) -> dict:
    """Every option of ``backend`` for a kernel: the given ones checked, the rest defaults."""
    unknown = set(given) - set(options)
    if unknown:
        raise ConfigError(f"config keys {sorted(unknown)} are neither constexpr parameters of kernel "
                          f"{kernel_name} ({', '.join(constexprs) or 'none'}) nor options of the {backend} "
                          f"backend ({', '.join(options) or 'none'})")
    out = {}
    for k, opt in options.items():
        v = given.get(k, opt.default)
        if opt.choices and v not in opt.choices:
            raise ConfigError(f"{backend} option {k}={v!r} is not one of {list(opt.choices)}")
        out[k] = v
    return out


class Backend:
    name = "base"
    device = "cpu"                       # where its kernels run: "cpu" or "cuda"
    extra = ""                           # the pip extra that installs it
    options: dict[str, Option] = {}

    def accepts(self, device: str) -> bool:
        """Whether this backend runs arrays living on ``device`` ("cpu", "cuda:0", ...)."""
        return device.split(":")[0] == self.device

    def missing(self) -> str | None:
        """Why this backend cannot run here (with the install hint), or None."""
        return None

    def resolve_options(self, given: dict[str, Any], kernel_name: str, constexprs: Sequence[str]) -> dict:
        return resolve_options(self.name, self.options, given, kernel_name, constexprs)

    def render(self, fn: Function, options: dict) -> str:
        raise NotImplementedError

    def compile(self, fn: Function, options: dict) -> Compiled:
        raise NotImplementedError

    def prepare_scalar(self, value: Any, dtype) -> Any:
        """A scalar argument as the runner takes it: a plain Python number of the IR's kind."""
        return bool(value) if dtype.kind == "bool" else float(value) if dtype.is_float else int(value)

    def prepare(self, arg: Any, name: str) -> Any:
        """The argument as this backend's runner takes it (zero-copy where possible)."""
        return arg

"""Tuning keys: what a tuned config is valid for.

A key names the op, the backend, the device (or hardware profile), the dtype, the shape
bucket and the tilec version. Its text form is the Optuna study name, so a result is only
ever read back for the same kind of call:

    gemm|numba|cpu-intel-xeon-processor-2-10ghz-x2|float32|K=1024,M=1024,N=1024|tilec-0.1.0

Shape bucket: each dimension rounded up to the next power of two (1000 -> 1024, 1 -> 1),
so one tune serves the shapes that behave alike, and a 4096 tune is never used at 512.
"""
from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass

from ..errors import TilecError

SEP = "|"


def bucket(shape: dict) -> dict:
    """Each dimension rounded up to a power of two."""
    out = {}
    for name, value in shape.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            try:
                value = int(value)
            except (TypeError, ValueError):
                raise TilecError(f"shape dimension {name}={value!r} is not a non-negative integer") from None
            if value < 0:
                raise TilecError(f"shape dimension {name}={value} is negative")
        out[str(name)] = 1 if value <= 1 else 1 << (int(value) - 1).bit_length()
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


@functools.cache
def _cpu_name() -> str:
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1]
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine()
    name = re.sub(r"\((r|tm)\)", "", name, flags=re.IGNORECASE)
    return f"cpu-{_slug(name)}-x{os.cpu_count() or 1}"


@functools.cache
def _gpu_name(index: int) -> str:
    """The GPU model behind ``cuda:N`` when a GPU library can tell, else a generic name."""
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(index)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        return f"gpu-{_slug(name)}"
    except Exception:
        pass
    try:
        import torch
        if torch.cuda.is_available():
            return f"gpu-{_slug(torch.cuda.get_device_name(index))}"
    except Exception:
        pass
    return "gpu-cuda"


def device_id(device: str) -> str:
    """A stable name for the hardware behind ``device``: "cpu", "cuda:N" or "profile:NAME"."""
    if device == "cpu":
        return _cpu_name()
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m:
        return _gpu_name(int(m.group(1) or 0))
    if device.startswith("profile:") and len(device) > len("profile:"):
        return "profile-" + _slug(device.split(":", 1)[1])
    raise TilecError(f"device {device!r} is not 'cpu', 'cuda:N' or 'profile:NAME'")


def _version() -> str:
    import tilec
    return tilec.__version__


@dataclass(frozen=True)
class TuningKey:
    op: str
    backend: str
    device: str          # device_id(...) text, e.g. cpu-...-x2, gpu-nvidia-a100, profile-a100
    dtype: str
    shape: tuple         # bucketed ((name, size), ...) sorted by name
    version: str

    @classmethod
    def make(cls, op: str, shape: dict, dtype: str, backend: str, device: str) -> TuningKey:
        for label, value in (("op", op), ("dtype", dtype), ("backend", backend)):
            if not isinstance(value, str) or not value or SEP in value:
                raise TilecError(f"tuning key {label} must be a non-empty name without '{SEP}', got {value!r}")
        return cls(op, backend, device_id(device), dtype, tuple(sorted(bucket(shape).items())), _version())

    @property
    def study_name(self) -> str:
        shape = ",".join(f"{k}={v}" for k, v in self.shape)
        return SEP.join([self.op, self.backend, self.device, self.dtype, shape, f"tilec-{self.version}"])

    def as_dict(self) -> dict:
        return {"op": self.op, "backend": self.backend, "device": self.device, "dtype": self.dtype,
                "shape_bucket": dict(self.shape), "version": self.version}

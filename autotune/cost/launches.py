"""What the cost models count: the launched kernel of an (op, shape, dtype, config) as IR, with
its grid, the extents of its tensor arguments and its scalar arguments, so that
``tilec.workload.count`` can count it. The IR comes from the op's ``launch_ir`` (``ops.REGISTRY``)
or, for the host records' own kernels, from ``autotune.cost.hostbench``; this module only
states how an op's problem shape lays out its tensors (what its host code allocates and
passes), which ``tests/test_workload.py`` checks against real launches.

Ops whose launches this module cannot describe raise ``TilecError``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from tilec.errors import TilecError
from tilec.ir import Function
from tilec.kernel import cdiv_host


@dataclass(frozen=True)
class Launch:
    fn: Function
    grid: tuple[int, ...]
    extents: dict[str, tuple[int, ...]]     # tensor parameter -> extents
    scalars: dict[str, Any]
    values: dict[str, Any] = field(default_factory=dict)   # contents of small tensors read for bounds
    then: tuple["Launch", ...] = ()         # launches that follow (a split's combine kernel)


def _need(op: str, shape: dict, config: dict, shape_keys, config_keys) -> None:
    miss = [k for k in shape_keys if k not in shape] + [k for k in config_keys if k not in config]
    if miss:
        raise TilecError(f"{op} workload needs {miss} (shape {shape}, config {config})")


def _registry(op: str):
    import ops
    return ops.REGISTRY[op]


def _gemm(shape, dtype, config):
    _need("gemm", shape, config, ("M", "N", "K"), ("BM", "BN", "BK"))
    M, N, K = (int(shape[k]) for k in "MNK")
    _, fn, grid = _registry("gemm").launch_ir({"M": M, "N": N, "K": K}, dtype, config)
    return Launch(fn, grid, {"A": (M, K), "B": (K, N), "C": (M, N), "bias": (N,)}, {"alpha": 1.0})


def _gemv(shape, dtype, config):
    _need("gemv", shape, config, ("M", "K"), ("BM", "BK"))
    M, K = int(shape["M"]), int(shape["K"])
    _, fn, grid = _registry("gemv").launch_ir({"M": M, "K": K}, dtype, config)
    return Launch(fn, grid, {"A": (M, K), "X": (K,), "Y": (M,), "bias": (M,)}, {"alpha": 1.0})


def _quant_gemm(shape, dtype, config):
    _need("quant_gemm", shape, config, ("M", "N", "K"), ("BM", "BNB"))
    M, N, K = (int(shape[k]) for k in "MNK")
    bits, G = int(shape.get("bits", 4)), int(shape.get("group_size", 128))
    P = 8 // bits
    _, fn, grid = _registry("quant_gemm").launch_ir(shape, dtype, config)
    lanes = (cdiv_host(K, G), N // P, P)
    return Launch(fn, grid, {"X": (M, K), "QW": (K, N // P), "S": lanes, "Z": lanes, "Y": (M, N // P, P)}, {})


def _lut_gemm(shape, dtype, config):
    _need("lut_gemm", shape, config, ("M", "N", "K"), ("BM", "BN", "MU"))
    M, N, K = (int(shape[k]) for k in "MNK")
    Q, G = int(shape.get("bits", 3)), int(shape.get("group_size", 128))
    groups, GB = cdiv_host(K, G), cdiv_host(G, 8)
    _, fn, grid = _registry("lut_gemm").launch_ir(shape, dtype, config)
    return Launch(fn, grid, {"X": (M, K), "Bits": (Q, groups * GB, N), "Alpha": (Q, groups, N),
                             "Beta": (groups, N), "Y": (M, N)}, {})


def _attention(shape, dtype, config):
    if "Lq" not in shape:
        return _host_attention(shape, dtype, config)
    _need("attention", shape, config, ("B", "H", "Lq", "Lk", "D"), ("BM", "BN"))
    B, H, Lq, Lk, D = (int(shape[k]) for k in ("B", "H", "Lq", "Lk", "D"))
    Hkv = int(shape.get("Hkv", H))
    cfg = {"BD": 1 << max(0, (D - 1).bit_length()), **config}
    _, fn, grid = _registry("attention").launch_ir({**shape, "Hkv": Hkv}, dtype, cfg)
    out = (B, H, Lq, D)
    return Launch(fn, grid, {"Q": out, "K": (B, Hkv, Lk, D), "V": (B, Hkv, Lk, D), "O": out, "LSE": out,
                             "M": out, "MAP": out, "LO": out, "HI": out, "CU": out},
                  {"scale_log2": 1.0, "left": 0, "right": 0})


def _host_attention(shape, dtype, config):
    """The host records' attention: H heads of N queries over N keys (hostbench.attention_kernel)."""
    _need("attention", shape, config, ("N", "D"), ("BM", "BN"))
    from tilec import dtypes
    from tilec.ir import TensorType, TileType

    from .hostbench import attention_kernel
    H, N, D = int(shape.get("H", 1)), int(shape["N"]), int(shape["D"])
    d = dtypes.lookup(dtype)
    types = {n: TensorType(3, d) for n in "QKVO"}
    types["scale"] = TileType((), dtypes.float32)
    consts, _ = attention_kernel.split_config({**config, "D": D})
    fn = attention_kernel.ir(types, consts)
    return Launch(fn, (cdiv_host(N, config["BM"]), H), {n: (H, N, D) for n in "QKVO"}, {"scale": 1.0})


def _quant_gemv(shape, dtype, config):
    """The host records' int8 weight-only GEMV (hostbench.quant_gemv_kernel)."""
    _need("quant_gemv", shape, config, ("M", "K"), ("BM", "BK"))
    from tilec import dtypes
    from tilec.ir import TensorType

    from .hostbench import quant_gemv_kernel
    M, K = int(shape["M"]), int(shape["K"])
    d = dtypes.lookup(dtype)
    w = dtypes.int8 if int(shape.get("wbits", 8)) == 8 else dtypes.uint8
    types = {"W": TensorType(2, w), "s": TensorType(1, d), "x": TensorType(1, d), "y": TensorType(1, d)}
    consts, _ = quant_gemv_kernel.split_config(config)
    fn = quant_gemv_kernel.ir(types, consts)
    return Launch(fn, (cdiv_host(M, config["BM"]),), {"W": (M, K), "s": (M,), "x": (K,), "y": (M,)}, {})


def _split(shape: dict, config: dict, step: int) -> tuple[int, int]:
    """(splits, chunk) as ops.decode.launch_decode cuts the L cached tokens: whole steps."""
    L = int(shape["L"])
    ns = max(1, min(int(config.get("NS", 1)), cdiv_host(L, step)))
    return ns, cdiv_host(cdiv_host(max(L, 1), ns), step) * step


def _decode_outputs(shape: dict, config: dict, ns: int, dtype: str, main: Function, grid: tuple, extents: dict,
                    scalars: dict, values: dict) -> Launch:
    """The decode kernel's outputs and, with several splits, the combine kernel that merges them."""
    from ops.decode import combine_kernel
    from tilec import dtypes
    from tilec.ir import TensorType
    B, H, T, D = (int(shape[k]) for k in ("B", "H", "T", "D"))
    out = (B, H, T, D)
    if ns == 1:
        return Launch(main, grid, {**extents, "O": out, "OP": out, "LP": out}, scalars, values)
    part, lse = (B, H, ns, T, D), (B, H, ns, T)
    f32 = dtypes.float32
    types = {"OP": TensorType(5, f32), "LP": TensorType(4, f32), "O": TensorType(4, dtypes.lookup(dtype))}
    consts, _ = combine_kernel.split_config({"NS": ns, "BT": T, "BD": config["BD"]})
    combine = Launch(combine_kernel.ir(types, consts), (H, B), {"OP": part, "LP": lse, "O": out}, {})
    return Launch(main, grid, {**extents, "O": out, "OP": part, "LP": lse}, scalars, values, (combine,))


def _decode(shape, dtype, config):
    """ops.decode_attention, every sequence at the cache's full length L."""
    _need("decode_attention", shape, config, ("B", "H", "Hkv", "T", "L", "D"), ("BN", "BD"))
    B, Hkv, L, D = (int(shape[k]) for k in ("B", "Hkv", "L", "D"))
    ns, chunk = _split(shape, config, int(config["BN"]))
    _, fn, _ = _registry("decode_attention").launch_ir(shape, dtype, {**config, "NS": ns})
    cache = (B, Hkv, L, D)
    return _decode_outputs(shape, config, ns, dtype, fn, (ns, Hkv, B),
                           {"Q": (B, int(shape["H"]), int(shape["T"]), D), "K": cache, "V": cache, "Lens": (B,)},
                           {"scale_log2": 1.0, "chunk": chunk}, {"Lens": [L] * B})


def _decode_quantized(shape, dtype, config):
    """ops.decode_attention_quantized over a full KIVI cache of L tokens (no residual tokens)."""
    _need("decode_attention_quantized", shape, config, ("B", "H", "Hkv", "T", "L", "D"), ("BD",))
    B, Hkv, L, D = (int(shape[k]) for k in ("B", "Hkv", "L", "D"))
    G, bits = int(shape.get("G", 32)), int(shape.get("bits", 2))
    ns, chunk = _split(shape, config, G * int(config.get("NG", 1)))
    _, fn, _ = _registry("decode_attention_quantized").launch_ir(shape, dtype, {**config, "NS": ns})
    codes, per_group = (B, Hkv, L * bits // 8, D), (B, Hkv, cdiv_host(L, G), D)
    res = (B, Hkv, G, D)
    return _decode_outputs(shape, config, ns, dtype, fn, (ns, Hkv, B),
                           {"Q": (B, int(shape["H"]), int(shape["T"]), D), "KC": codes, "KS": per_group,
                            "KZ": per_group, "VC": codes, "VS": (B, Hkv, L), "VZ": (B, Hkv, L), "KR": res, "VR": res,
                            "QLen": (B,), "RLen": (B,)},
                           {"scale_log2": 1.0, "chunk": chunk}, {"QLen": [L] * B, "RLen": [0] * B})


LAUNCHES: dict[str, Callable[[dict, str, dict], Launch]] = {
    "gemm": _gemm, "gemv": _gemv, "quant_gemm": _quant_gemm, "lut_gemm": _lut_gemm,
    "attention": _attention, "quant_gemv": _quant_gemv, "decode_attention": _decode,
    "decode_attention_quantized": _decode_quantized}


def launch(op: str, shape: dict, dtype: str, config: dict) -> Launch:
    if op not in LAUNCHES:
        raise TilecError(f"no IR launch known for op {op!r}; known: {sorted(LAUNCHES)} "
                         "(or give the record a 'workload' description)")
    return LAUNCHES[op](shape, dtype, config)

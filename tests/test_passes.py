"""The pass pipelines: named lists with reasons, lowering on a copy, ``tilec show --passes``,
and every op's default config rendered through them on every backend."""
from __future__ import annotations

import numpy as np
import pytest

import tilec as tc
from tilec import dtypes as dt
from tilec.ir import TensorType, TileType
from tilec.passes import COMMON, LOWERING, clone, lower, pipeline, print_after_all
from tilec.printer import format_function


@tc.kernel
def scaled_rows(X, Y, s, BM: tc.constexpr, BK: tc.constexpr):
    """A loop whose body computes an invariant (s * 2.0) the hoist pass moves out."""
    pm = tc.program_id(0)
    acc = tc.zeros((BM,), tc.float32)
    for k in tc.range(0, X.shape[1], BK):
        acc = acc + tc.sum(tc.load(X, (pm * BM, k), (BM, BK)) * (s * 2.0), axis=1)
    tc.store(Y, (pm * BM,), acc)


TYPES = {"X": TensorType(2, dt.float32), "Y": TensorType(1, dt.float32), "s": TileType((), dt.float32)}
CONSTS = {"BM": 4, "BK": 8}


def test_every_backend_has_a_flat_named_pipeline_with_reasons():
    for backend in ("numba", "triton", "cuda"):
        passes = pipeline(backend)
        assert passes[:len(COMMON)] == COMMON and passes[len(COMMON):] == LOWERING[backend]
        names = [p.name for p in passes]
        assert len(set(names)) == len(names), names
        assert all(p.reason and "\n" not in p.reason for p in passes)


def test_print_after_all_shows_each_pass_in_order_and_what_it_changed():
    built = scaled_rows.build(TYPES, CONSTS)
    before = format_function(built)
    text = print_after_all(built, "numba", {"dot": "blas", "parallel": True})
    assert format_function(built) == before            # the input is not changed
    headers = [line for line in text.splitlines() if line.startswith("// ----- IR after ")]
    assert [h.split()[4].rstrip(":") for h in headers] == [p.name for p in pipeline("numba")]
    sections = dict(zip([p.name for p in pipeline("numba")], text.split("// ----- IR after ")[1:]))
    # hoist moves the invariant multiply in front of the loop
    def mul_before_loop(section: str) -> bool:
        lines = section.splitlines()
        loop = next(i for i, ln in enumerate(lines) if " for " in ln or "= for" in ln)
        return any("binary" in ln and "op=mul" in ln and "%s" in ln for ln in lines[:loop])
    assert not mul_before_loop(sections["simplify"]) and mul_before_loop(sections["hoist"])


def test_tilec_show_passes_prints_the_pipeline_of_the_chosen_backend():
    from ops.show import show
    for backend in ("numba", "triton", "cuda"):
        text = show("gemv", backend, what="passes")
        names = [ln.split()[4].rstrip(":") for ln in text.splitlines() if ln.startswith("// ----- IR after ")]
        assert names == [p.name for p in pipeline(backend)], backend
        assert text.count("func gemv_kernel(") == len(names)


def test_the_command_line_prints_the_passes(capsys):
    from autotune.cli_main import main
    assert main(["show", "gemm", "--backend", "numba", "--config", "dot=loops", "--passes"]) == 0
    out = capsys.readouterr().out
    assert out.count("// ----- IR after ") == len(pipeline("numba"))
    assert "// ----- IR after read-in-place: " in out and "in_place=True" in out


def test_clone_is_structurally_equal_and_shares_nothing():
    fn = scaled_rows.ir(TYPES, CONSTS)
    copy = clone(fn)
    assert format_function(copy) == format_function(fn)
    old = {id(o) for o in fn.walk()} | {id(v) for o in fn.walk() for v in o.results + o.operands}
    new = {id(o) for o in copy.walk()} | {id(v) for o in copy.walk() for v in o.results + o.operands}
    assert not old & new
    assert all(r.producer is o for o in copy.walk() for r in o.results)


def test_lowering_leaves_the_kernels_cached_ir_alone():
    fn = scaled_rows.ir(TYPES, CONSTS)
    before = format_function(fn)
    for backend, options in (("numba", {"dot": "loops", "parallel": True}), ("cuda", {"threads": 128, "mma": "simt"})):
        lower(fn, backend, options)
        assert format_function(fn) == before


def test_every_ops_default_config_renders_on_every_backend():
    """The sources the compiler is checked against byte for byte (ops.show.default_sources)."""
    import ops
    from ops.show import default_sources
    sources = dict(default_sources(dtypes=("float32", "float16")))
    assert all(text.strip() for text in sources.values())
    names = set(sources)
    for op in ops.REGISTRY:
        for backend in ("numba", "triton", "cuda"):
            assert f"{op}_{backend}_float32.txt" in names


@pytest.mark.parametrize("backend", ["numba"])
def test_a_kernel_runs_through_the_lowered_pipeline(backend):
    x = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
    y = np.zeros(8, np.float32)
    scaled_rows[(2,)](x, y, np.float32(0.5), BM=4, BK=8, backend=backend)
    np.testing.assert_allclose(y, (x.astype(np.float64) * 1.0).sum(1), rtol=1e-5)

"""Hardware profiles: every packaged profile validates, a broken one names file, key and
problem, user profiles load from $TILEC_PROFILES_DIR, and the host is detected/calibrated."""
from __future__ import annotations

import copy
import os
import tomllib
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hw_profiles
from hw_profiles import Profile, ProfileError, hostdetect
from hw_profiles.schema import profile_from_dict
from hw_profiles.tomlwrite import dumps
from tilec.errors import TilecError

REQUIRED = ["a100_sxm4_40gb", "a100_sxm4_80gb", "h100_sxm", "h100_pcie", "h200", "rtx4070", "rtx4090", "l4",
            "ascend910b", "gap8", "pulp_open", "host"]
PACKAGED = sorted(p.stem for p in hw_profiles.PACKAGE_DIR.glob("*.toml"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TILEC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TILEC_PROFILES_DIR", raising=False)


def test_required_profiles_exist():
    assert set(REQUIRED) <= set(hw_profiles.names())


@pytest.mark.parametrize("name", PACKAGED + ["host"])
def test_profile_loads_and_is_consistent(name):
    p = hw_profiles.load(name)
    assert isinstance(p, Profile) and p.name == name
    assert p.kind in ("gpu", "cpu", "npu", "mcu")
    assert p.compute_units > 0 and p.clock_hz > 0 and p.local_memory_bytes > 0
    assert p.peak_flops and all(v > 0 for v in p.peak_flops.values())
    assert set(p.energy_j_per_flop) >= set(p.peak_flops)
    assert 0 <= p.idle_power_w <= p.tdp_w
    # every figure a model reads has a source
    for d in p.peak_flops:
        assert p.sources.get(f"peak_flops.{d}"), d
    for key in ("compute_units", "clock_hz", "local_memory_bytes", "idle_power_w", "tdp_w"):
        assert p.sources.get(key), key
    for m in p.memory:
        assert m.capacity_bytes > 0 and m.bandwidth_bytes_per_s > 0 and m.energy_j_per_byte >= 0
        assert m.scope in ("cu", "shared", "dram")
    if p.kind == "gpu":
        assert p.max_threads_per_block and p.registers_per_thread and p.registers_per_cu and p.warp_size
        assert p.local_memory_bytes <= p.local_memory_per_cu_bytes


def test_facts_from_the_reference_table():
    a100 = hw_profiles.load("a100_sxm4_40gb")
    assert (a100.arch, a100.compute_units, a100.local_memory_bytes) == ("sm_80", 108, 163 * 1024)
    assert a100.peak("float16") == pytest.approx(312e12) and a100.dram.bandwidth_bytes_per_s == pytest.approx(1555e9)
    assert hw_profiles.load("a100_sxm4_80gb").dram.bandwidth_bytes_per_s == pytest.approx(2039e9)
    for name in ("h100_sxm", "h100_pcie", "h200"):
        h = hw_profiles.load(name)
        assert h.arch == "sm_90" and h.local_memory_bytes == 227 * 1024 and h.max_threads_per_cu == 2048
    assert hw_profiles.load("h200").dram.bandwidth_bytes_per_s > hw_profiles.load("h100_sxm").dram.bandwidth_bytes_per_s
    for name in ("rtx4070", "rtx4090", "l4"):
        ada = hw_profiles.load(name)
        assert ada.arch == "sm_89" and ada.local_memory_bytes == 99 * 1024 and ada.max_threads_per_cu == 1536
    npu = hw_profiles.load("ascend910b")
    assert npu.matrix_unit == (16, 16, 16)
    assert {m.name for m in npu.memory} >= {"L0A", "L0B", "L0C", "L1", "UB", "HBM"}
    assert npu.level("L0A").capacity_bytes == 64 * 1024 and npu.level("L0C").capacity_bytes == 128 * 1024
    assert npu.level("UB").capacity_bytes == 192 * 1024 and npu.level("L1").capacity_bytes == 512 * 1024
    for name in ("gap8", "pulp_open"):
        mcu = hw_profiles.load(name)
        assert mcu.compute_units == 8 and mcu.level("L1").capacity_bytes == 64 * 1024
        assert mcu.level("L2").capacity_bytes == 512 * 1024
    assert hw_profiles.load("gap8").peak("float32") is None          # no FPU
    assert hw_profiles.load("pulp_open").peak("float32") is not None


def test_unknown_profile_lists_known_ones():
    with pytest.raises(TilecError, match="a100_sxm4_40gb"):
        hw_profiles.load("no_such_gpu")


# -- broken profiles ----------------------------------------------------------------------------
def _valid_doc() -> dict:
    return tomllib.loads((hw_profiles.PACKAGE_DIR / "l4.toml").read_text())


def _expect(doc: dict, key_part: str, tmp_path, problem: str | None = None):
    path = tmp_path / f"{doc.get('name', 'x')}.toml"
    path.write_text(dumps(doc))
    with pytest.raises(ProfileError) as info:
        hw_profiles.load(str(path))
    e = info.value
    assert e.file == str(path) and str(path) in str(e)
    assert key_part in e.key and key_part in str(e)
    if problem:
        assert problem in e.problem
    assert isinstance(e, TilecError)
    return e


@pytest.mark.parametrize("key", ["name", "kind", "arch", "backends", "compute_units", "clock_hz", "peak_flops",
                                 "memory", "local_memory_bytes", "idle_power_w", "tdp_w", "sources"])
def test_missing_required_key(key, tmp_path):
    doc = _valid_doc()
    del doc[key]
    _expect(doc, key, tmp_path, "missing")


BREAKAGES = [
    (lambda d: d.update(compute_units="58"), "compute_units", "integer"),
    (lambda d: d.update(compute_units=0), "compute_units", "> 0"),
    (lambda d: d.update(clock_hz=-1.0), "clock_hz", "> 0"),
    (lambda d: d.update(kind="fpga"), "kind", "one of"),
    (lambda d: d.update(backends=["numba", "opencl"]), "backends[1]", "one of"),
    (lambda d: d.update(idle_power_w=500.0), "idle_power_w", "exceeds"),
    (lambda d: d.update(colour="green"), "colour", "unknown key"),
    (lambda d: d["peak_flops"].update(float17=1e12), "peak_flops.float17", "unknown dtype"),
    (lambda d: d["peak_flops"].update(float32="fast"), "peak_flops.float32", "number"),
    (lambda d: d["memory"][0].update(scope="galaxy"), "memory.SMEM.scope", "one of"),
    (lambda d: d["memory"][1].pop("bandwidth_bytes_per_s"), "memory.L2.bandwidth_bytes_per_s", "missing"),
    (lambda d: d["memory"][2].update(capacity_bytes=-5), "memory.DRAM.capacity_bytes", "> 0"),
    (lambda d: d["memory"][2].update(speed=1), "memory.DRAM.speed", "unknown key"),
    (lambda d: d["sources"].pop("peak_flops.float32"), "sources.peak_flops.float32", "source"),
    (lambda d: d["sources"].pop("memory.DRAM.bandwidth_bytes_per_s"), "sources.memory.DRAM.bandwidth_bytes_per_s", "source"),
    (lambda d: d.update(matrix_unit=[16, 8]), "matrix_unit", "[m, n, k]"),
    (lambda d: d.update(peak_flops={}), "peak_flops", "empty"),
    (lambda d: d.update(memory=[]), "memory", "empty"),
]


@pytest.mark.parametrize("breakage,key,problem", BREAKAGES)
def test_broken_profile_names_file_key_problem(breakage, key, problem, tmp_path):
    doc = _valid_doc()
    breakage(doc)
    _expect(doc, key, tmp_path, problem)


def test_invalid_toml_and_name_mismatch(tmp_path, monkeypatch):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = 'bad'\ncompute_units = = 3\n")
    with pytest.raises(ProfileError, match="not valid TOML") as info:
        hw_profiles.load(str(bad))
    assert info.value.file == str(bad)
    user = tmp_path / "user"
    user.mkdir()
    doc = _valid_doc()
    (user / "my_gpu.toml").write_text(dumps(doc))            # name inside says "l4"
    monkeypatch.setenv("TILEC_PROFILES_DIR", str(user))
    with pytest.raises(ProfileError, match="my_gpu.toml") as info:
        hw_profiles.load("my_gpu")
    assert info.value.key == "name"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_single_key_damage_is_reported(data, tmp_path):
    """Replace any one top-level or memory-level figure with a wrong-typed value: always a
    ProfileError that names that key."""
    doc = _valid_doc()
    numeric = [k for k, v in doc.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    where = data.draw(st.sampled_from(numeric + ["memory"]))
    junk = data.draw(st.sampled_from(["text", True, [1, 2], {"a": 1}]))
    if where == "memory":
        i = data.draw(st.integers(0, len(doc["memory"]) - 1))
        field = data.draw(st.sampled_from(["capacity_bytes", "bandwidth_bytes_per_s", "energy_j_per_byte"]))
        doc["memory"][i][field] = junk
        key = f"memory.{doc['memory'][i]['name']}.{field}"
    else:
        doc[where] = junk
        key = where
    with pytest.raises(ProfileError) as info:
        profile_from_dict(copy.deepcopy(doc), "damaged.toml")
    assert info.value.key == key and info.value.file == "damaged.toml"


# -- user profiles -------------------------------------------------------------------------------
def test_user_profile_directory(tmp_path, monkeypatch):
    doc = _valid_doc()
    doc["name"] = "my_accel"
    doc["compute_units"] = 7
    (tmp_path / "my_accel.toml").write_text(dumps(doc))
    shadow = _valid_doc()
    shadow["compute_units"] = 3
    (tmp_path / "l4.toml").write_text(dumps(shadow))
    monkeypatch.setenv("TILEC_PROFILES_DIR", str(tmp_path))
    assert "my_accel" in hw_profiles.names()
    assert hw_profiles.load("my_accel").compute_units == 7
    assert hw_profiles.load("l4").compute_units == 3            # a user file shadows the packaged one
    assert hw_profiles.load(str(tmp_path / "my_accel.toml")).name == "my_accel"


def test_energy_per_flop_default_is_derived_and_sourced():
    p = hw_profiles.load("h100_sxm")
    want = 0.5 * (p.tdp_w - p.idle_power_w) / p.peak("float16")
    assert p.energy_j_per_flop["float16"] == pytest.approx(want)
    assert p.sources["energy_j_per_flop.float16"].startswith("[D]")


# -- TOML writer -----------------------------------------------------------------------------------
scalars = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=20), st.booleans())
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.-0123456789 ", min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(top=st.dictionaries(keys, st.one_of(scalars, st.lists(st.integers(0, 9), max_size=4)), max_size=6),
       table=st.dictionaries(keys, scalars, max_size=5),
       rows=st.lists(st.dictionaries(keys, scalars, min_size=1, max_size=3), min_size=1, max_size=3))
def test_toml_writer_round_trips(top, table, rows):
    doc = {**{k: v for k, v in top.items() if k not in ("tbl", "rows")}, "tbl": table, "rows": rows}
    assert tomllib.loads(dumps(doc, header="a header\nsecond line")) == doc


# -- host ---------------------------------------------------------------------------------------
def test_host_is_detected():
    h = hw_profiles.host()
    assert h.kind == "cpu" and h.backends == ("numba",)
    assert h.compute_units == len(os.sched_getaffinity(0))
    assert h.simd_width_bits in (128, 256, 512)
    assert h.level("L1").capacity_bytes >= 8 * 1024 and h.local_memory_bytes >= h.level("L1").capacity_bytes
    assert h.notes["calibrated"] is False and h.sources["peak_flops.float32"].startswith("[E]")
    assert hw_profiles.load("host").name == "host"


def test_calibration_file_is_used_on_this_machine_only(monkeypatch):
    fake = {"stream_read_bytes_per_s": 11.5e9, "stream_triad_bytes_per_s": 9.0e9, "fp32_fma_flops": 123.0e9}
    monkeypatch.setattr(hostdetect, "measure", lambda seconds=0.5: dict(fake))
    path = hostdetect.calibrate().path
    assert path.name == "host_profile.toml" and path.is_file()
    h = hw_profiles.host()
    assert h.peak("float32") == pytest.approx(123.0e9) and h.dram.bandwidth_bytes_per_s == pytest.approx(11.5e9)
    assert h.sources["peak_flops.float32"].startswith("[M]") and h.notes["calibrated"] is True
    # the same file read on another machine is ignored, with a warning
    text = path.read_text().replace(hostdetect.cpu_model(), "Some Other CPU")
    path.write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h2 = hw_profiles.host()
    assert h2.notes["calibrated"] is False and any("another machine" in str(w.message) for w in caught)
    # a damaged file is ignored with a warning naming the problem
    path.write_text("name = 'host'\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h3 = hw_profiles.host()
    assert h3.notes["calibrated"] is False and any("missing" in str(w.message) for w in caught)


def test_microbenchmarks_measure_something():
    m = hostdetect.measure(seconds=0.05, stream_bytes=48 * 1024 * 1024)
    assert m["stream_read_bytes_per_s"] > 1e8 and m["stream_triad_bytes_per_s"] > 1e8
    assert m["fp32_fma_flops"] > 1e9


# -- CLI ----------------------------------------------------------------------------------------
def test_cli_list_show_and_errors(capsys, tmp_path):
    from autotune.cli_main import main
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    for name in REQUIRED:
        assert name in out
    assert main(["profiles", "show", "ascend910b"]) == 0
    out = capsys.readouterr().out
    assert "L0A" in out and "[V] INI" in out
    bad = tmp_path / "broken.toml"
    bad.write_text("name = 'broken'\n")
    assert main(["profiles", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.toml" in err and "missing" in err


def test_cli_calibrate_writes_host_profile(capsys, monkeypatch):
    from autotune.cli_main import main
    monkeypatch.setattr(hostdetect, "measure", lambda seconds=0.5: {
        "stream_read_bytes_per_s": 10e9, "stream_triad_bytes_per_s": 8e9, "fp32_fma_flops": 50e9})
    assert main(["profiles", "calibrate", "--seconds", "0.01"]) == 0
    assert "host_profile.toml" in capsys.readouterr().out
    assert hw_profiles.host().peak("float32") == pytest.approx(50e9)


def test_one_bad_user_profile_is_reported_and_skipped(tmp_path, monkeypatch, capsys):
    """A bad TOML in $TILEC_PROFILES_DIR made `profiles list` and `cost-model pick` fail outright."""
    from tilec.cli import main
    (tmp_path / "broken.toml").write_text("name = 'broken'\ncompute_units = [\n")
    doc = _valid_doc()
    doc["name"] = "my_gpu"
    (tmp_path / "my_gpu.toml").write_text(dumps(doc))
    monkeypatch.setenv("TILEC_PROFILES_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="skipping profile 'broken'.*broken.toml"):
        assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    assert "my_gpu" in out and "h100_sxm" in out and "broken" not in out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["cost-model", "pick", "--shape", "M=256,N=256,K=256"]) == 0
    assert "h100_sxm" in capsys.readouterr().out


def _runs(monkeypatch, fp32_values):
    """hostdetect.measure giving these fp32 rates (GFLOP/s) in turn, bandwidths steady."""
    values = iter(fp32_values)
    monkeypatch.setattr(hostdetect, "measure", lambda seconds=0.5: {
        "stream_read_bytes_per_s": 10e9, "stream_triad_bytes_per_s": 8e9, "fp32_fma_flops": next(values) * 1e9})


def test_calibration_repeats_until_two_runs_agree_and_keeps_the_best(monkeypatch, capsys):
    from tilec.cli import main
    _runs(monkeypatch, [9.4, 219, 31.8, 212, 5])
    assert main(["profiles", "calibrate", "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "9.4 / 219.0 / 31.8 / 212.0" in out and "did not settle" not in out
    assert hw_profiles.host().peak("float32") == pytest.approx(219e9)
    _runs(monkeypatch, [9.4, 219, 31.8, 100, 50])       # never two within 10%
    assert main(["profiles", "calibrate", "--seconds", "0.01", "--force"]) == 0
    assert "did not settle within 10% in 5 tries" in capsys.readouterr().out
    assert hw_profiles.host().peak("float32") == pytest.approx(219e9)


def test_calibration_never_silently_replaces_a_better_stored_one(monkeypatch, capsys):
    from tilec.cli import main
    _runs(monkeypatch, [219, 220])
    assert main(["profiles", "calibrate", "--seconds", "0.01"]) == 0
    capsys.readouterr()
    _runs(monkeypatch, [31.8, 32.0])                    # a busy machine: steady, but far lower
    assert main(["profiles", "calibrate", "--seconds", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "kept the stored fp32 FMA of 220.0 GFLOP/s" in out and "--force" in out
    assert hw_profiles.host().peak("float32") == pytest.approx(220e9)
    _runs(monkeypatch, [31.8, 32.0])
    assert main(["profiles", "calibrate", "--seconds", "0.01", "--force"]) == 0
    assert "kept" not in capsys.readouterr().out
    assert hw_profiles.host().peak("float32") == pytest.approx(32e9)

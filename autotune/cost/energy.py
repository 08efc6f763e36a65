"""Energy of a measured run, from the analytical model's energy terms and the run's own
runtime and clock: how well do the profiles' power figures explain measured power?

    P = idle power + (energy/flop) x flop rate + sum over levels (energy/byte) x byte rate

Rates are what the workload asks for over the measured time, capped at what the profile can
deliver at the run's clock (peak flop/s scales with the core clock; memory does not).
With ``dvfs`` the energy per flop scales as (clock / nominal clock)^2: CMOS switching energy
goes with V^2, and under DVFS the voltage follows the clock (a textbook prior, not a fit).
"""
from __future__ import annotations

from dataclasses import dataclass

from .analytical import _level_traffic, occupancy
from .features import analyse, profile_of
from .records import Record

DVFS_EXPONENT = 2.0


@dataclass
class EnergyCheck:
    record: Record
    predicted_j: float
    measured_j: float

    @property
    def error(self) -> float:
        """Relative error (predicted - measured) / measured."""
        return (self.predicted_j - self.measured_j) / self.measured_j


def power_at(rec: Record, dvfs: bool = True) -> float:
    w, _ = analyse(rec)
    p = profile_of(rec)
    t = rec.runtime_s
    scale = (rec.clock_hz / p.clock_hz) if rec.clock_hz else 1.0
    peak = (p.peak(w.peak_key) or min(p.peak_flops.values())) * scale
    flop_rate = min(w.flops / max(w.work_efficiency, 1e-9) / t, peak)
    slots = p.compute_units * max(1, occupancy(w, p)["programs_per_cu"])
    mem = sum(min(b / t, m.bandwidth_bytes_per_s) * m.energy_j_per_byte
              for m in p.memory for name, b in _level_traffic(w, p, slots).items() if name == m.name)
    e_flop = p.flop_energy(w.peak_key) * (scale ** DVFS_EXPONENT if dvfs else 1.0)
    return p.idle_power_w + e_flop * flop_rate + mem


def check(records: list[Record], dvfs: bool = True) -> list[EnergyCheck]:
    return [EnergyCheck(r, power_at(r, dvfs) * r.runtime_s, r.energy_j) for r in records if r.energy_j]

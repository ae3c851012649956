"""Queueing theory to compare the simulation with, and the batch-means statistics it uses.

Erlang C (M/M/N, first come first served, nobody abandons), with offered load ``A = λ · AHT``
in Erlangs on ``N`` agents:

- P(wait) = C(N, A), computed through the Erlang B recursion (numerically stable for N in the
  thousands): ``B(0) = 1``, ``B(n) = A·B(n-1) / (n + A·B(n-1))``, ``C = B / (1 - rho(1 - B))``.
- average speed of answer ASA = C · AHT / (N - A), over all calls (those that did not wait count 0).
- service level SL(t) = P(W <= t) = 1 - C · exp(-(N - A) · t / AHT).

For M/G/N (a fixed ACW makes handle time "exponential talk + constant"), there is no closed
form; the usual approximation (Allen-Cunneen / Lee-Longton) keeps P(wait) and scales the waiting
time by ``(1 + cs²) / 2``, where ``cs²`` is the squared coefficient of variation of handle time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def erlang_b(agents: int, load: float) -> float:
    """Blocking probability of M/M/N/N."""
    b = 1.0
    for n in range(1, agents + 1):
        b = load * b / (n + load * b)
    return b


def erlang_c(agents: int, load: float) -> float:
    """Probability that a call waits in M/M/N (1.0 when the queue is unstable)."""
    if load >= agents:
        return 1.0
    b = erlang_b(agents, load)
    rho = load / agents
    return b / (1.0 - rho * (1.0 - b))


@dataclass(frozen=True, slots=True)
class Theory:
    p_wait: float
    asa_s: float
    service_level: float
    occupancy: float

    def as_dict(self) -> dict[str, float]:
        return {
            "p_wait": self.p_wait,
            "asa_s": self.asa_s,
            "service_level": self.service_level,
            "occupancy": self.occupancy,
        }


def mmn(agents: int, arrivals_per_hour: float, aht_s: float, sl_target_s: float) -> Theory:
    """Erlang C figures for ``agents`` servers, Poisson arrivals, exponential handle time."""
    load = arrivals_per_hour / 3600.0 * aht_s
    c = erlang_c(agents, load)
    spare = agents - load
    return Theory(
        p_wait=c,
        asa_s=c * aht_s / spare,
        service_level=1.0 - c * math.exp(-spare * sl_target_s / aht_s),
        occupancy=load / agents,
    )


def mgn_approx(
    agents: int, arrivals_per_hour: float, aht_s: float, sl_target_s: float, scv: float
) -> Theory:
    """M/G/N by the Allen-Cunneen approximation: Erlang C's P(wait), waits scaled by (1+cs²)/2.

    The conditional wait is taken as exponential with the scaled mean, which gives the service
    level; it is an approximation, shown next to the simulation, not a target.
    """
    base = mmn(agents, arrivals_per_hour, aht_s, sl_target_s)
    factor = (1.0 + scv) / 2.0
    load = arrivals_per_hour / 3600.0 * aht_s
    mean_wait_if_waiting = aht_s / (agents - load) * factor
    return Theory(
        p_wait=base.p_wait,
        asa_s=base.asa_s * factor,
        service_level=1.0 - base.p_wait * math.exp(-sl_target_s / mean_wait_if_waiting),
        occupancy=base.occupancy,
    )


# -- batch means ---------------------------------------------------------------------------------

# Two-sided 97.5% quantiles of Student's t, for the batch counts used here (df = batches - 1).
_T975 = {9: 2.262, 14: 2.145, 19: 2.093, 24: 2.064, 29: 2.045, 39: 2.023, 49: 2.010}


def t975(df: int) -> float:
    if df in _T975:
        return _T975[df]
    try:
        from scipy.stats import t  # benchmark-only dependency

        return float(t.ppf(0.975, df))
    except ImportError:  # pragma: no cover - scipy comes with `make bench`
        return 1.96


@dataclass(frozen=True, slots=True)
class Estimate:
    mean: float
    lo: float
    hi: float

    @property
    def ci95(self) -> list[float]:
        return [self.lo, self.hi]

    def covers(self, value: float) -> bool:
        return self.lo <= value <= self.hi


def batch_means(values: Sequence[float], batches: int = 20) -> Estimate:
    """Mean and 95% confidence interval of a correlated series, by non-overlapping batch means.

    The series (one value per call, in arrival order) is cut into ``batches`` equal consecutive
    batches; the batch averages are nearly independent when batches are long compared with the
    queue's memory, so Student's t on them gives the interval.
    """
    n = len(values) // batches * batches
    if n == 0:
        raise ValueError("not enough values for batch means")
    size = n // batches
    means = [sum(values[i * size : (i + 1) * size]) / size for i in range(batches)]
    grand = sum(means) / batches
    var = sum((m - grand) ** 2 for m in means) / (batches - 1)
    half = t975(batches - 1) * math.sqrt(var / batches)
    return Estimate(grand, grand - half, grand + half)

"""The real acwd runtime in virtual time, against queueing theory.

A ``Node`` (agent actors, dispatcher, ACW timers) runs in-process under trio's
``MockClock(autojump_threshold=0)``: whenever every task is waiting, the clock jumps to the next
deadline, so a day of traffic takes seconds. Customers arrive as a Poisson process
(``work.submit``); offers are auto-accepted (``offer_timeout_s = 0``); each call's agent talks for
an exponential time, ends the leg, and

- in ``manual`` ACW mode finishes its wrap-up (``acw.complete``) after ``k`` times its talk time,
  so talk + ACW stays exponential with mean ``(1 + k) · talk``: the model is exactly M/M/N and
  Erlang C applies;
- in ``timed`` mode the daemon's own timer ends a fixed ACW: handle time is exponential plus a
  constant, the model becomes M/G/N, and Erlang C is only an approximation.

Waits come from the daemon's own ``work.accepted`` events (``wait_s``, from the original enqueue
time). Estimates use batch means over calls in arrival order, after a warm-up.

Run ``python -m benchmarks.simulate --help``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import random
import sys
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import anyio
import structlog

from benchmarks.erlang import Estimate, batch_means, mgn_approx, mmn

WARMUP = 0.05  # share of calls, in arrival order, left out of every estimate
BATCHES = 20
RANDOM = "random"  # not a daemon policy: the router is swapped in-process (see RandomRouter)


@dataclass(frozen=True, slots=True)
class Case:
    """One simulated contact centre."""

    name: str
    agents: int
    arrivals_per_hour: float
    talk_s: float  # mean of the exponential talk time
    acw_ratio: float = 0.0  # manual ACW of acw_ratio x this call's talk time (M/M/N stays exact)
    acw_fixed_s: float = 0.0  # timed ACW of a fixed length (the model becomes M/G/N)
    sl_target_s: float = 20.0
    calls: int = 20_000
    capacity: int = 1
    policy: str = "longest_idle"  # longest_idle | least_active | random
    acw_scope: str = "agent"
    journal: str = "none"  # none | memory: the in-memory SQLite journal (slower, same routing)
    seed: str = ""  # cases with the same seed get the same customers (default: the name)

    @property
    def aht_s(self) -> float:
        return self.talk_s * (1.0 + self.acw_ratio) + self.acw_fixed_s

    @property
    def servers(self) -> int:
        return self.agents * self.capacity

    @property
    def scv(self) -> float:
        """Squared coefficient of variation of handle time (1 for exponential)."""
        sd = self.talk_s * (1.0 + self.acw_ratio)
        return (sd / self.aht_s) ** 2

    @property
    def exact(self) -> bool:
        return self.acw_fixed_s == 0.0

    def settings(self) -> dict[str, Any]:
        if self.acw_fixed_s > 0:
            acw: dict[str, Any] = {"acw_mode": "timed", "acw_seconds": self.acw_fixed_s}
        elif self.acw_ratio > 0:
            acw = {"acw_mode": "manual"}
        else:
            acw = {"acw_mode": "off"}
        policy = "longest_idle" if self.policy == RANDOM else self.policy
        return {
            "defaults": {
                **acw,
                "offer_timeout_s": 0.0,
                "acw_scope": self.acw_scope,
                "sla_target_s": self.sl_target_s,
            },
            "queues": {"q": {"policy": policy}},
            "journal": {"path": ":memory:", "commit_interval_ms": 0.0},
        }

    def theory(self) -> dict[str, float]:
        if self.exact:
            t = mmn(self.servers, self.arrivals_per_hour, self.aht_s, self.sl_target_s)
        else:
            t = mgn_approx(
                self.servers, self.arrivals_per_hour, self.aht_s, self.sl_target_s, self.scv
            )
        return t.as_dict()


@dataclass(slots=True)
class Trace:
    """What one run recorded: per call in arrival order, per agent, and the run's own figures."""

    waits: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)  # the same calls through fcfs_waits
    busy: dict[str, float] = field(default_factory=dict)  # agent → handle seconds in the window
    window_s: float = 0.0
    virtual_s: float = 0.0
    wall_s: float = 0.0
    max_timer_lateness_s: float = 0.0


def _random_router_class() -> type:
    """A Router whose non-skills policies pick uniformly among eligible routable members.

    acwd has no random policy; the benchmark swaps the dispatcher's Router for this subclass
    before any agent logs in, so everything else (actors, timers, the item order) is the real
    runtime. Only the choice of agent differs.
    """
    from acwd.core.routing import Router

    class RandomRouter(Router):
        rng = random.Random(0)

        def _best_agent(self, item: Any, now: float) -> Any:
            q = self.queues[item.queue]
            eligible = [
                self.agents[a]
                for a in sorted(q.members)
                if self._eligible(self.agents[a], item, now)
            ]
            return self.rng.choice(eligible) if eligible else None

    return RandomRouter


def _null_journal() -> Any:
    """A journal that stores nothing: the routing is the same, and the run is about 2x faster."""
    from acwd.core.config import JournalConfig
    from acwd.runtime.journal import Journal, Recovered

    class NullJournal(Journal):
        def open(self) -> Recovered:
            return Recovered([], [], 0.0)

        def track_items(self, source: Any) -> None:
            pass

        def agent_changed(self, agent_id: str, dump: Any) -> Any:
            return None  # nothing to wait for: replies are not held for a commit

        def items_changed(self) -> Any:
            return None

        def wrapup(self, record: Any) -> Any:
            return None

        def event(self, event: Any) -> None:
            pass

        async def run(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await anyio.sleep_forever()

        async def flush(self) -> None:
            pass

        def close(self) -> None:
            pass

    return NullJournal(JournalConfig(path=":memory:"))


async def _simulate(case: Case, seed: int) -> Trace:
    from acwd.core.config import Settings
    from acwd.core.events import AcwEnded, WorkAccepted, WorkEnded
    from acwd.core.views import Wrapup
    from acwd.runtime.node import Node

    # Every random number is drawn up front, per call, so an independent FCFS reference
    # (``fcfs_waits``) can replay exactly the same customers.
    arrivals_rng, talk_rng = random.Random(seed), random.Random(seed + 7)
    arrivals_per_s = case.arrivals_per_hour / 3600.0
    gaps = [arrivals_rng.expovariate(arrivals_per_s) for _ in range(case.calls)]
    talks = [talk_rng.expovariate(1.0 / case.talk_s) for _ in range(case.calls)]
    settings = Settings.from_dict(case.settings())
    node = Node(settings, journal=_null_journal() if case.journal == "none" else None)
    handles = [t * (1.0 + case.acw_ratio) + case.acw_fixed_s for t in talks]
    trace = Trace(waits=[math.nan] * case.calls, reference=fcfs_waits(gaps, handles, case.servers))
    starts: dict[str, tuple[str, float]] = {}  # work_id → (agent, accepted at)
    intervals: list[tuple[str, float, float]] = []
    accepted = 0
    all_accepted = anyio.Event()
    wrapup = Wrapup(disposition="resolved")
    ratio, manual = case.acw_ratio, case.acw_ratio > 0

    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        if case.policy == RANDOM:
            node.dispatcher.state = _random_router_class()(settings)
            node.dispatcher.state.rng = random.Random(seed + 1)

        async def conversation(work_id: str, agent_id: str) -> None:
            talk = talks[int(work_id[1:])]
            await anyio.sleep(talk)
            await node.end(work_id, agent_id)
            if manual:
                await anyio.sleep(ratio * talk)
                await node.acw_complete(work_id, wrapup, agent_id)

        def observe(event: Any) -> None:
            nonlocal accepted
            kind = type(event)
            if kind is WorkAccepted:
                trace.waits[int(event.work_id[1:])] = event.wait_s
                starts[event.work_id] = (event.agent_id, event.at)
                tg.start_soon(conversation, event.work_id, event.agent_id)
                accepted += 1
                if accepted == case.calls:
                    all_accepted.set()
            elif kind is AcwEnded or (kind is WorkEnded and not event.acw):
                agent_id, began = starts.pop(event.work_id)
                intervals.append((agent_id, began, event.at))

        def late(kind: str, seconds: float) -> None:
            trace.max_timer_lateness_s = max(trace.max_timer_lateness_s, seconds)

        node.observers.append(observe)
        node.lateness_observers.append(late)
        for i in range(case.agents):
            await node.login(f"a{i:03d}", None, capacity=case.capacity, queues=["q"])
        began = node.clock.now()
        arrivals: list[float] = []
        due = anyio.current_time()
        for i in range(case.calls):
            due += gaps[i]
            await anyio.sleep_until(due)
            arrivals.append(node.clock.now())
            await node.submit(f"w{i}", "q")
        await all_accepted.wait()
        trace.virtual_s = node.clock.now() - began
        tg.cancel_scope.cancel()

    # Occupancy over the window from the end of warm-up to the last arrival, busy time clipped.
    lo, hi = arrivals[int(case.calls * WARMUP)], arrivals[-1]
    trace.window_s = hi - lo
    trace.busy = {f"a{i:03d}": 0.0 for i in range(case.agents)}
    for agent_id, a, b in intervals:
        trace.busy[agent_id] += max(0.0, min(b, hi) - max(a, lo))
    return trace


def fcfs_waits(gaps: Sequence[float], handles: Sequence[float], servers: int) -> list[float]:
    """Waits of the same calls in an ideal FCFS queue with ``servers`` identical servers.

    A router that never leaves an agent idle while work waits, and serves in arrival order,
    must reproduce these call for call, whatever agent it picks.
    """
    free = [0.0] * servers
    waits = []
    t = 0.0
    for gap, handle in zip(gaps, handles, strict=True):
        t += gap
        start = max(t, heapq.heappop(free))
        heapq.heappush(free, start + handle)
        waits.append(start - t)
    return waits


def run_case(case: Case) -> dict[str, Any]:
    """Simulate one case in this process and summarise it (a dict, for the JSON and for pools)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    import trio.testing

    seed = zlib.crc32((case.seed or case.name).encode())
    started = time.perf_counter()
    trace = anyio.run(
        _simulate,
        case,
        seed,
        backend="trio",
        backend_options={"clock": trio.testing.MockClock(autojump_threshold=0)},
    )
    trace.wall_s = time.perf_counter() - started
    return summarise(case, trace)


def summarise(case: Case, trace: Trace) -> dict[str, Any]:
    waits = trace.waits[int(case.calls * WARMUP) :]
    target = case.sl_target_s
    # A call waits when it was not offered at the instant it arrived (virtual time is exact).
    p_wait = batch_means([1.0 if w > 1e-6 else 0.0 for w in waits], BATCHES)
    asa = batch_means(waits, BATCHES)
    sl = batch_means([1.0 if w <= target else 0.0 for w in waits], BATCHES)
    theory = case.theory()
    occupancy = [trace.busy[a] / (case.capacity * trace.window_s) for a in sorted(trace.busy)]
    mean_occ = sum(occupancy) / len(occupancy)
    sd_occ = math.sqrt(sum((o - mean_occ) ** 2 for o in occupancy) / max(1, len(occupancy) - 1))
    diffs = [abs(a - b) for a, b in zip(trace.waits, trace.reference, strict=True)]
    return {
        "name": case.name,
        "agents": case.agents,
        "capacity": case.capacity,
        "arrivals_per_hour": case.arrivals_per_hour,
        "aht_s": case.aht_s,
        "talk_s": case.talk_s,
        "acw_s": case.aht_s - case.talk_s,
        "acw": "fixed" if case.acw_fixed_s else ("exponential" if case.acw_ratio else "none"),
        "policy": case.policy,
        "model": "M/M/N" if case.exact else "M/G/N",
        "sl_target_s": target,
        "calls": case.calls,
        "warmup_calls": int(case.calls * WARMUP),
        "theory": {k: theory[k] for k in ("p_wait", "asa_s", "service_level")},
        "sim": {
            "p_wait": p_wait.mean,
            "p_wait_ci95": p_wait.ci95,
            "asa_s": asa.mean,
            "asa_ci95": asa.ci95,
            "service_level": sl.mean,
            "service_level_ci95": sl.ci95,
        },
        "theory_in_ci95": {
            "p_wait": p_wait.covers(theory["p_wait"]),
            "asa_s": asa.covers(theory["asa_s"]),
            "service_level": sl.covers(theory["service_level"]),
        },
        "occupancy": {
            "theory": theory["occupancy"],
            "mean": mean_occ,
            "sd": sd_occ,
            "min": min(occupancy),
            "max": max(occupancy),
            "per_agent": occupancy,
        },
        "virtual_hours": trace.virtual_s / 3600.0,
        "wall_s": trace.wall_s,
        "calls_per_wall_s": case.calls / trace.wall_s,
        "max_timer_lateness_s": trace.max_timer_lateness_s,
        # Against the ideal FCFS queue fed the same calls (see fcfs_waits): 0 means exact.
        "reference": {
            "max_abs_diff_s": max(diffs),
            "calls_off_by_1ms": sum(1 for d in diffs if d > 1e-3),
            "p_wait": sum(1 for w in trace.reference[int(case.calls * WARMUP) :] if w > 1e-6)
            / len(waits),
        },
    }


# -- the cases ------------------------------------------------------------------------------------


def erlang_cases(scale: float) -> list[Case]:
    """The published Erlang C cases (issue 7). ``scale`` multiplies the number of calls.

    Handle time is split into exponential talk plus ACW of k x talk, so every case also runs the
    ACW path (manual mode, ended with acw.complete); the 60 s case has no ACW at all.
    """

    def n(calls: int) -> int:
        return max(2_000, int(calls * scale))

    return [
        Case(
            "600/h 120s 26 agents", 26, 600, 90, acw_ratio=1 / 3, sl_target_s=20, calls=n(100_000)
        ),
        Case(
            "600/h 120s 30 agents", 30, 600, 90, acw_ratio=1 / 3, sl_target_s=20, calls=n(100_000)
        ),
        Case("30/h 60s 2 agents", 2, 30, 60, sl_target_s=10, calls=n(50_000)),
        Case(
            "30/h 60s+20s ACW 2 agents", 2, 30, 60, acw_ratio=1 / 3, sl_target_s=10, calls=n(50_000)
        ),
        Case(
            "250/h 330s 27 agents", 27, 250, 270, acw_ratio=2 / 9, sl_target_s=30, calls=n(60_000)
        ),
        Case(
            "250/h 330s 28 agents", 28, 250, 270, acw_ratio=2 / 9, sl_target_s=30, calls=n(60_000)
        ),
    ]


def fixed_acw_cases(scale: float) -> list[Case]:
    """The same centres with a fixed, timed ACW instead of an exponential one: M/G/N."""

    def n(calls: int) -> int:
        return max(2_000, int(calls * scale))

    return [
        Case(
            "30/h 60s+20s fixed ACW 2 agents",
            2,
            30,
            60,
            acw_fixed_s=20,
            sl_target_s=10,
            calls=n(30_000),
        ),
        Case(
            "600/h 90s+30s fixed ACW 26 agents",
            26,
            600,
            90,
            acw_fixed_s=30,
            sl_target_s=20,
            calls=n(30_000),
        ),
    ]


def policy_cases(scale: float) -> list[Case]:
    """The policies on one centre: 20 agents with 2 slots each (ACW holds its slot), 80% busy.

    With capacity 1, least_active has nothing to rank (every routable agent has 0 units in use)
    and is longest_idle by definition, so the comparison uses 2 slots, where the policies differ.
    Any work-conserving policy gives the same waits here (40 identical exponential servers), and
    the three runs share their customers (same seed), so their waits must agree call for call.
    """
    calls = max(2_000, int(25_000 * scale))
    base = Case(
        "policy",
        20,
        960,
        90,
        acw_ratio=1 / 3,
        sl_target_s=20,
        calls=calls,
        capacity=2,
        acw_scope="slot",
        seed="policies",
    )
    return [
        replace(base, name=f"policy {p}", policy=p)
        for p in ("longest_idle", "least_active", RANDOM)
    ]


def run_all(cases: Sequence[Case], workers: int) -> list[dict[str, Any]]:
    """Run cases on ``workers`` processes (largest first), results in the order given."""
    order = sorted(range(len(cases)), key=lambda i: -cases[i].calls * (1 + cases[i].agents / 50))
    if workers <= 1:
        return [run_case(c) for c in cases]
    with ProcessPoolExecutor(workers) as pool:
        futures = {i: pool.submit(run_case, cases[i]) for i in order}
        return [futures[i].result() for i in range(len(cases))]


def simulate(scale: float, workers: int) -> dict[str, Any]:
    erl, fixed, pol = erlang_cases(scale), fixed_acw_cases(scale), policy_cases(scale)
    results = run_all([*erl, *fixed, *pol], workers)
    out_erl = results[: len(erl)]
    out_fixed = results[len(erl) : len(erl) + len(fixed)]
    out_pol = results[len(erl) + len(fixed) :]
    for result, case in zip(out_fixed, fixed, strict=True):
        exp_case = replace(case, acw_fixed_s=0.0, acw_ratio=case.acw_fixed_s / case.talk_s)
        result["theory_erlang_c"] = {
            k: v for k, v in exp_case.theory().items() if k in ("p_wait", "asa_s", "service_level")
        }
        result["scv"] = case.scv
    return {"erlang": out_erl, "fixed_acw": out_fixed, "policies": out_pol}


def coverage(case: Case, replications: int) -> dict[str, float]:
    """How often the batch-means interval contains Erlang C at this run length.

    Replays independent customers through ``fcfs_waits`` (which the daemon matches call for call,
    and which is ~100x faster), so the interval method itself can be checked; M/M/N cases only.
    """
    theory = case.theory()
    hits = {"p_wait": 0, "asa_s": 0, "service_level": 0}
    warm = int(case.calls * WARMUP)
    for r in range(replications):
        rng = random.Random(1_000_003 * (r + 1))
        gaps = [rng.expovariate(case.arrivals_per_hour / 3600.0) for _ in range(case.calls)]
        handles = [rng.expovariate(1.0 / case.aht_s) for _ in range(case.calls)]
        waits = fcfs_waits(gaps, handles, case.servers)[warm:]
        est = {
            "p_wait": batch_means([1.0 if w > 1e-6 else 0.0 for w in waits], BATCHES),
            "asa_s": batch_means(waits, BATCHES),
            "service_level": batch_means(
                [1.0 if w <= case.sl_target_s else 0.0 for w in waits], BATCHES
            ),
        }
        for key, e in est.items():
            hits[key] += e.covers(theory[key])
    return {key: n / replications for key, n in hits.items()}


def _fmt(est: Estimate) -> str:
    return f"{est.mean:.4f} [{est.lo:.4f}, {est.hi:.4f}]"


def print_summary(sim: dict[str, Any], file: Any = sys.stdout) -> None:
    for section in ("erlang", "fixed_acw", "policies"):
        for r in sim[section]:
            s, t, o = r["sim"], r["theory"], r["occupancy"]
            print(
                f"{r['name']:<36} calls={r['calls']:>6} "
                f"P(wait) {s['p_wait']:.4f} [{s['p_wait_ci95'][0]:.4f},{s['p_wait_ci95'][1]:.4f}]"
                f" th {t['p_wait']:.4f} | ASA {s['asa_s']:.2f} [{s['asa_ci95'][0]:.2f},"
                f"{s['asa_ci95'][1]:.2f}] th {t['asa_s']:.2f} | SL {s['service_level']:.4f} "
                f"th {t['service_level']:.4f} | occ sd {o['sd']:.4f} "
                f"| {r['calls_per_wall_s']:.0f} calls/s",
                file=file,
            )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="multiply every case's call count")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--case", help="run only cases whose name contains this")
    p.add_argument("--journal", choices=("none", "memory"), default="none")
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--coverage",
        type=int,
        metavar="R",
        help="instead: check the intervals' coverage with R replications of the FCFS reference",
    )
    args = p.parse_args(argv)
    if args.coverage:
        for case in erlang_cases(args.scale):
            if args.case is None or args.case in case.name:
                cov = coverage(case, args.coverage)
                shown = ", ".join(f"{k} {v:.0%}" for k, v in cov.items())
                print(f"{case.name:<30} {case.calls:>7} calls: {shown}", flush=True)
        return 0
    if args.case:
        cases = [
            replace(c, journal=args.journal)
            for c in (
                *erlang_cases(args.scale),
                *fixed_acw_cases(args.scale),
                *policy_cases(args.scale),
            )
            if args.case in c.name
        ]
        results = run_all(cases, args.workers)
        print(json.dumps(results, indent=1)[:4000])
        return 0
    sim = simulate(args.scale, args.workers)
    print_summary(sim)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(sim, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["Case", "asdict", "run_case", "simulate"]

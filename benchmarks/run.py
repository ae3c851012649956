"""The whole suite: simulation, load, scale; writes results/latest.json, the PNGs and the table.

    python -m benchmarks.run            # quick: what `make bench` runs (under 5 min, 2 cores)
    python -m benchmarks.run --full     # longer runs, tighter intervals, 100,000 real actors

Each stage runs in its own process (the simulation on two), so none measures another's
leftovers. ``--update-readme`` rewrites the results table in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


@dataclass(frozen=True)
class Mode:
    name: str
    sim_scale: float
    load_agents: int
    load_steady_s: float
    load_ping_s: float
    load_rate: float
    scale_decisions: int
    memory_agents: int
    memory_loops: str


QUICK = Mode("quick", 0.1, 10_000, 8.0, 2.0, 300.0, 1000, 25_000, "asyncio")
FULL = Mode("full", 1.0, 10_000, 30.0, 5.0, 300.0, 5000, 100_000, "asyncio,trio")


def _stage(name: str, argv: list[str], out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    print(f"== {name}: {' '.join(argv[2:])}", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, "-m", *argv, "--json", str(out)],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    result: dict[str, Any] = json.loads(out.read_text())
    print(f"   {name} took {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    result["_seconds"] = time.perf_counter() - started
    return result


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
        return done.stdout.strip()
    except OSError:
        return ""


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run(mode: Mode, stages: set[str], profile: bool) -> dict[str, Any]:
    began = time.perf_counter()
    meta: dict[str, Any] = {
        "mode": mode.name,
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "acwd")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": _loadavg(),
    }
    out: dict[str, Any] = {"meta": meta}
    with tempfile.TemporaryDirectory(prefix="bench7-run-") as tmp:
        folder = Path(tmp)
        if "scale" in stages:
            scale = _stage(
                "scale",
                [
                    "benchmarks.scale",
                    "--decisions",
                    str(mode.scale_decisions),
                    "--memory-agents",
                    str(mode.memory_agents),
                    "--loops",
                    mode.memory_loops,
                ],
                folder / "scale.json",
            )
            out.update(_scale_section(scale))
        if "sim" in stages:
            sim = _stage(
                "simulation",
                ["benchmarks.simulate", "--scale", str(mode.sim_scale), "--workers", "2"],
                folder / "sim.json",
            )
            out["erlang"], out["fixed_acw"], out["policies"] = (
                sim["erlang"],
                sim["fixed_acw"],
                sim["policies"],
            )
            meta["sim_seconds"] = sim["_seconds"]
        if "load" in stages:
            argv = [
                "benchmarks.load",
                "--agents",
                str(mode.load_agents),
                "--steady",
                str(mode.load_steady_s),
                "--ping",
                str(mode.load_ping_s),
                "--rate",
                str(mode.load_rate),
            ]
            if profile:
                argv += ["--profile", str(RESULTS)]
            load = _stage("load", argv, folder / "load.json")
            out["load"] = _load_section(load)
            out["recovery"] = load.get("recovery")
            meta["load_seconds"] = load["_seconds"]
            if profile:
                out["profile"] = _profiles()
    meta["loadavg_after"] = _loadavg()
    meta["seconds"] = time.perf_counter() - began
    out["targets"] = targets(out)
    return out


def _scale_section(scale: dict[str, Any]) -> dict[str, Any]:
    rows = scale["routing"]
    memory = scale["memory"]
    for m in memory:
        m["mb_per_100k"] = m["bytes_per_agent"] * 100_000 / 2**20
        m["extrapolated_to_100k"] = m["agents"] != 100_000
    return {
        "scale": [
            {k: r[k] for k in ("agents", "items", "route_us", "route_item_us", "policy")}
            for r in rows
            if r["policy"] == "longest_idle"
        ],
        "scale_policies": rows,
        "actor_memory": memory,
        "meta_scale_seconds": scale["_seconds"],
    }


def _load_section(load: dict[str, Any]) -> dict[str, Any]:
    loops = load["loops"]
    main = next((lp for lp in loops if lp["loop"] == "asyncio"), loops[0])
    fields = (
        "agents",
        "rpc_per_s",
        "echo_rpc_per_s",
        "ratio_to_echo",
        "routing_latency_ms",
        "acw_lateness_ms",
        "rss_mb_per_1k_agents",
    )
    section = {k: main[k] for k in fields}
    section["loop"] = main["loop"]
    section["loops"] = loops
    return section


def _profiles() -> dict[str, Any]:
    from benchmarks.profiling import summarise

    found = {}
    for path in sorted(RESULTS.glob("daemon-*.txt")):
        found[path.stem] = summarise(path)
    return found


def targets(r: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each with the figure it is judged on (goals, not assertions)."""
    out: dict[str, Any] = {}
    if r.get("erlang"):
        inside = [all(c["theory_in_ci95"].values()) for c in r["erlang"]]
        checks = sum(len(c["theory_in_ci95"]) for c in r["erlang"])
        hits = sum(sum(c["theory_in_ci95"].values()) for c in r["erlang"])
        exact = max(c["reference"]["max_abs_diff_s"] for c in r["erlang"])
        out["erlang_c_inside_every_ci95"] = {
            "met": all(inside),
            "figure": f"{hits}/{checks} intervals contain Erlang C",
            "fcfs_reference_max_diff_s": exact,
        }
    if r.get("load"):
        for lp in r["load"]["loops"]:
            name = lp["loop"]
            out[f"rpc_half_of_echo[{name}]"] = {
                "met": lp["ratio_to_echo"] >= 0.5,
                "figure": lp["ratio_to_echo"],
            }
            out[f"routing_p99_under_1ms[{name}]"] = {
                "met": (lp["routing_latency_ms"]["p99"] or 1e9) < 1.0,
                "figure": lp["routing_latency_ms"]["p99"],
            }
            out[f"acw_lateness_p99_under_5ms[{name}]"] = {
                "met": (lp["acw_lateness_ms"]["p99"] or 1e9) < 5.0,
                "figure": lp["acw_lateness_ms"]["p99"],
            }
    if r.get("scale"):
        by_n = {row["agents"]: row["route_us"] for row in r["scale"]}
        if 1000 in by_n and 100_000 in by_n:
            out["route_100k_within_2x_of_1k"] = {
                "met": by_n[100_000] <= 2 * by_n[1000],
                "figure": by_n[100_000] / by_n[1000],
            }
    for m in r.get("actor_memory", []):
        out[f"under_1GB_for_100k_agents[{m['loop']}]"] = {
            "met": m["mb_per_100k"] < 1024,
            "figure": m["mb_per_100k"],
            "extrapolated": m["extrapolated_to_100k"],
        }
    return out


# -- the table ------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: list[float], pct: bool = True) -> str:
    lo, hi = ci
    return f"[{_pct(lo)}, {_pct(hi)}]" if pct else f"[{lo:.2f}, {hi:.2f}]"


def table(r: dict[str, Any]) -> str:
    lines = []
    m = r.get("meta")
    if m:
        lines += [
            f"Run: `{m['mode']}`, {m['started']}, commit `{m['commit']}`"
            f"{' (+ local changes)' if m.get('dirty') else ''}, Python {m['python']}, "
            f"{m['cpus']} CPUs, load average {m['loadavg_before'][0]:.1f} before / "
            f"{m['loadavg_after'][0]:.1f} after, {m['seconds']:.0f} s in all.",
            "",
        ]
    if r.get("erlang"):
        lines += [
            "**Erlang C** (M/M/N; simulated = the real runtime in virtual time, batch means, "
            "95% CI)",
            "",
            "| case | calls | P(wait) theory | P(wait) sim [95% CI] | ASA theory | "
            "ASA sim [95% CI] | SL theory | SL sim [95% CI] | in CI |",
            "|---|---:|---:|---:|---:|---:|---:|---:|:---:|",
        ]
        for c in r["erlang"]:
            t, s = c["theory"], c["sim"]
            inside = sum(c["theory_in_ci95"].values())
            lines.append(
                f"| {c['name']} (SL {c['sl_target_s']:.0f} s) | {c['calls']:,} | "
                f"{_pct(t['p_wait'])} | {_pct(s['p_wait'])} {_ci(s['p_wait_ci95'])} | "
                f"{t['asa_s']:.2f} s | {s['asa_s']:.2f} {_ci(s['asa_ci95'], False)} | "
                f"{_pct(t['service_level'])} | {_pct(s['service_level'])} "
                f"{_ci(s['service_level_ci95'])} | {inside}/3 |"
            )
        worst = max(c["reference"]["max_abs_diff_s"] for c in r["erlang"])
        lines += [
            "",
            f"Call for call, the daemon's waits equal an ideal FCFS queue fed the same calls "
            f"(largest difference {worst:.1e} s: float rounding).",
            "",
        ]
    if r.get("fixed_acw"):
        lines += [
            "**Fixed ACW timer** (M/G/N: exponential talk + constant ACW)",
            "",
            "| case | calls | P(wait) sim | Erlang C | ASA sim [95% CI] | ASA Erlang C | "
            "ASA M/G/N approx. |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in r["fixed_acw"]:
            s, e, t = c["sim"], c["theory_erlang_c"], c["theory"]
            lines.append(
                f"| {c['name']} | {c['calls']:,} | {_pct(s['p_wait'])} "
                f"{_ci(s['p_wait_ci95'])} | {_pct(e['p_wait'])} | {s['asa_s']:.2f} "
                f"{_ci(s['asa_ci95'], False)} | {e['asa_s']:.2f} | {t['asa_s']:.2f} |"
            )
        lines.append("")
    if r.get("policies"):
        c0 = r["policies"][0]
        lines += [
            f"**Policies** ({c0['agents']} agents x {c0['capacity']} slots, "
            f"{c0['arrivals_per_hour']:.0f} calls/h, AHT {c0['aht_s']:.0f} s; "
            f"Erlang C P(wait) {_pct(c0['theory']['p_wait'])})",
            "",
            "| policy | calls | P(wait) [95% CI] | ASA [95% CI] | occupancy mean | sd | "
            "min | max |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in r["policies"]:
            s, o = c["sim"], c["occupancy"]
            lines.append(
                f"| {c['policy']} | {c['calls']:,} | {_pct(s['p_wait'])} "
                f"{_ci(s['p_wait_ci95'])} | {s['asa_s']:.2f} {_ci(s['asa_ci95'], False)} | "
                f"{_pct(o['mean'])} | {_pct(o['sd'])} | {_pct(o['min'])} | {_pct(o['max'])} |"
            )
        lines.append("")
    if r.get("load"):
        lines += [
            f"**Load** (daemon process, {r['load']['agents']:,} agents over "
            f"{r['load']['loops'][0]['connections']} connections, journal on disk)",
            "",
            "| loop | acwd ping/s | echo/s | ratio | raw-protocol echo/s | submit/s | "
            "routing p50 / p99 / p99.9 ms | ACW lateness p50 / p99 ms | MB per 1k agents |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for lp in r["load"]["loops"]:
            rl, al, d = lp["routing_latency_ms"], lp["acw_lateness_ms"], lp["detail"]
            lines.append(
                f"| {lp['loop']} | {lp['rpc_per_s']:,.0f} | {lp['echo_rpc_per_s']:,.0f} | "
                f"{lp['ratio_to_echo']:.3f} | {lp['echo_protocol_rpc_per_s']:,.0f} | "
                f"{d['submit_per_s']:,.0f} | {rl['p50']:.2f} / {rl['p99']:.2f} / "
                f"{rl['p999']:.2f} | {al['p50']:.2f} / {al['p99']:.2f} | "
                f"{lp['rss_mb_per_1k_agents']:.1f} |"
            )
        lines.append("")
    if r.get("recovery"):
        rec = r["recovery"]
        lines += [
            f"**Recovery**: restart on the load run's journal ({rec['agents']:,} agents, "
            f"{rec['items']:,} items, {rec['journal_mb']:.0f} MB): listening after "
            f"{rec['startup_s']:.2f} s vs {rec['empty_startup_s']:.2f} s empty "
            f"(reading the journal: {rec['read_s']} s).",
            "",
        ]
    if r.get("scale"):
        lines += [
            "**Scale** (core Router, median µs per decision)",
            "",
            "| agents = waiting items | policy | item → best agent | agent → best item |",
            "|---:|---|---:|---:|",
        ]
        for row in r["scale_policies"]:
            lines.append(
                f"| {row['agents']:,} | {row['policy']} | {row['route_us']:,.1f} | "
                f"{row['route_item_us']:,.1f} |"
            )
        lines.append("")
        for mem in r.get("actor_memory", []):
            how = (
                f"measured at {mem['agents']:,}, x {100_000 / mem['agents']:g}"
                if mem["extrapolated_to_100k"]
                else "measured"
            )
            lines.append(
                f"Memory for 100,000 agent actors ({mem['loop']}): "
                f"**{mem['mb_per_100k']:.0f} MB** ({mem['bytes_per_agent']:,.0f} B each; {how});"
                f" logins took {mem['login_s']:.1f} s for {mem['agents']:,}."
            )
        lines.append("")
    if r.get("targets"):
        lines += ["**Targets**", "", "| goal | met | figure |", "|---|:---:|---|"]
        for name, t in r["targets"].items():
            fig = t["figure"]
            shown = f"{fig:.3g}" if isinstance(fig, float) else str(fig)
            lines.append(f"| {name} | {'yes' if t['met'] else 'no'} | {shown} |")
        lines.append("")
    return "\n".join(lines)


def update_readme(text: str) -> None:
    readme = README.read_text()
    if START not in readme or END not in readme:
        raise SystemExit(f"{README} has no {START} … {END} block")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="run the acwd benchmarks")
    p.add_argument("--full", action="store_true", help="the long version")
    p.add_argument("--stages", default="scale,sim,load")
    p.add_argument("--profile", action="store_true", help="py-spy the daemon during load")
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "latest.json"))
    p.add_argument("--table", metavar="JSON", help="only print the table of a results file")
    args = p.parse_args(argv)
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        saved.setdefault("targets", targets(saved))
        print(table(saved))
        return 0
    mode = FULL if args.full else QUICK
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = run(mode, set(args.stages.split(",")), args.profile)
    out = Path(args.out).resolve()
    out.write_text(json.dumps(results, indent=1) + "\n")
    try:
        from benchmarks.plots import all_plots

        for path in all_plots(results, out.parent):
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    except ImportError as exc:  # matplotlib comes with `make bench`
        print(f"no plots ({exc}); pip install -e '.[bench]'", file=sys.stderr)
    text = table(results)
    (out.parent / f"{out.stem}.md").write_text(text + "\n")
    print(text)
    if args.update_readme:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""PNG figures from ``results/latest.json`` (matplotlib, a benchmark-only dependency)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _interval(ax: Any, y: float, est: float, ci: list[float], color: str, label: str) -> None:
    ax.errorbar(
        [est],
        [y],
        xerr=[[est - ci[0]], [ci[1] - est]],
        fmt="o",
        color=color,
        capsize=3,
        label=label,
    )


def erlang(results: dict[str, Any], out: Path) -> Path:
    cases = results["erlang"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.55 * len(cases) + 2.2), sharey=True)
    metrics = [
        ("p_wait", "p_wait_ci95", "P(wait)"),
        ("asa_s", "asa_ci95", "average speed of answer (s)"),
        ("service_level", "service_level_ci95", "service level"),
    ]
    names = [f"{c['name']} (n={c['calls']:,})" for c in cases]
    for ax, (key, ci_key, title) in zip(axes, metrics, strict=True):
        for y, case in enumerate(cases):
            sim = case["sim"]
            ci = sim.get(ci_key) or [sim[key], sim[key]]
            _interval(ax, y, sim[key], ci, "tab:blue", "simulated, 95% CI" if y == 0 else "")
            ax.plot(
                [case["theory"][key]],
                [y],
                "x",
                color="tab:red",
                ms=9,
                label="Erlang C" if y == 0 else "",
            )
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(cases)), names)
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("The real acwd runtime in virtual time vs Erlang C (M/M/N)")
    fig.tight_layout()
    path = out / "erlang.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fixed_acw(results: dict[str, Any], out: Path) -> Path:
    cases = results.get("fixed_acw", [])
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.2 * len(cases) + 2.2), sharey=True)
    for ax, (key, ci_key, title) in zip(
        axes,
        [("p_wait", "p_wait_ci95", "P(wait)"), ("asa_s", "asa_ci95", "ASA (s)")],
        strict=True,
    ):
        for y, case in enumerate(cases):
            sim = case["sim"]
            _interval(ax, y, sim[key], sim[ci_key], "tab:blue", "simulated (fixed ACW)" * (y == 0))
            ax.plot(
                [case["theory_erlang_c"][key]],
                [y],
                "x",
                color="tab:red",
                ms=9,
                label="Erlang C, same AHT" if y == 0 else "",
            )
            ax.plot(
                [case["theory"][key]],
                [y],
                "d",
                color="tab:green",
                ms=7,
                label="M/G/N (Allen-Cunneen)" if y == 0 else "",
            )
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(cases)), [c["name"] for c in cases])
    axes[0].invert_yaxis()
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle("A fixed ACW timer: handle time is no longer exponential (M/G/N)")
    fig.tight_layout()
    path = out / "fixed_acw.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def policies(results: dict[str, Any], out: Path) -> Path:
    cases = results["policies"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    for case in cases:
        occ = sorted(case["occupancy"]["per_agent"])
        left.plot(
            range(1, len(occ) + 1),
            occ,
            "o-",
            ms=3,
            label=f"{case['policy']} (sd {case['occupancy']['sd']:.3f})",
        )
    left.axhline(cases[0]["occupancy"]["theory"], color="grey", ls=":", label="offered load")
    left.set_xlabel("agent (sorted by occupancy)")
    left.set_ylabel("occupancy (share of slot time busy)")
    left.set_title("Spread of occupancy across agents")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for y, case in enumerate(cases):
        sim = case["sim"]
        _interval(right, y, sim["p_wait"], sim["p_wait_ci95"], "tab:blue", "")
    right.axvline(cases[0]["theory"]["p_wait"], color="tab:red", ls="--", label="Erlang C")
    right.set_yticks(range(len(cases)), [c["policy"] for c in cases])
    right.invert_yaxis()
    right.set_xlabel("P(wait), 95% CI")
    right.set_title("Same waiting")
    right.legend(fontsize=8)
    right.grid(axis="x", alpha=0.3)
    c0 = cases[0]
    fig.suptitle(
        f"Policies: {c0['agents']} agents x {c0['capacity']} slots, "
        f"{c0['arrivals_per_hour']:.0f} calls/h, AHT {c0['aht_s']:.0f} s"
    )
    fig.tight_layout()
    path = out / "policies.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def load(results: dict[str, Any], out: Path) -> Path:
    loops = results["load"]["loops"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    names = [lp["loop"] for lp in loops]
    x = range(len(loops))
    width = 0.38
    left.bar(
        [i - width / 2 for i in x], [lp["rpc_per_s"] for lp in loops], width, label="acwd (ping)"
    )
    left.bar(
        [i + width / 2 for i in x],
        [lp["echo_rpc_per_s"] for lp in loops],
        width,
        label="bare echo (anyio streams)",
    )
    left.set_yscale("log")
    left.set_xticks(list(x), names)
    left.set_ylabel("requests / s (log)")
    left.set_title("RPC throughput vs the bare echo server")
    left.legend(fontsize=8)
    for i, lp in enumerate(loops):
        left.annotate(
            f"{lp['ratio_to_echo']:.3f}x",
            (i - width / 2, lp["rpc_per_s"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    keys = ["p50", "p99", "p999"]
    for i, lp in enumerate(loops):
        vals = [lp["routing_latency_ms"][k] for k in keys]
        right.bar(
            [j + (i - 0.5) * width for j in range(len(keys))],
            vals,
            width,
            label=f"{lp['loop']} routing",
        )
    right.set_xticks(range(len(keys)), keys)
    right.set_yscale("log")
    right.set_ylabel("ms (log)")
    right.axhline(1.0, color="tab:red", ls=":", label="1 ms target (p99)")
    right.set_title(f"Routing latency, {loops[0]['agents']:,} agents")
    right.legend(fontsize=8)
    fig.tight_layout()
    path = out / "load.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scale(results: dict[str, Any], out: Path) -> Path:
    rows = results["scale_policies"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for policy in sorted({r["policy"] for r in rows}):
        mine = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["agents"])
        ax.plot(
            [r["agents"] for r in mine],
            [r["route_us"] for r in mine],
            "o-",
            label=f"{policy}: item → best agent",
        )
    mine = sorted((r for r in rows if r["policy"] == "longest_idle"), key=lambda r: r["agents"])
    ax.plot(
        [r["agents"] for r in mine],
        [r["route_item_us"] for r in mine],
        "s--",
        label="agent → best item",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents (and as many waiting items)")
    ax.set_ylabel("median µs per routing decision (log)")
    ax.set_title("Cost of one routing decision in the core Router")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "scale.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_plots(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for make, needs in (
        (erlang, "erlang"),
        (fixed_acw, "fixed_acw"),
        (policies, "policies"),
        (load, "load"),
        (scale, "scale_policies"),
    ):
        if results.get(needs):
            made.append(make(results, out))
    return made


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/latest.json")
    for path in all_plots(json.loads(source.read_text()), source.parent):
        print(path)

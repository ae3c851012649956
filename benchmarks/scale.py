"""Scale: the cost of one routing decision as the centre grows, and what 100,000 agents weigh.

1. **Routing decisions** in the pure core ``Router`` (no event loop), at 1,000, 10,000 and
   100,000 agents and as many waiting items, timed one decision at a time (median µs):
   - ``route_us``: an item arrives and goes to the best of N routable agents
     (``submit`` + ``dispatch`` → one offer); the agent then becomes routable again with a new
     idle-since, so the next decision again chooses among N;
   - ``route_item_us``: an agent becomes routable and takes the best of N waiting items
     (``dispatch`` → one offer); a new item then joins, so N stay waiting.
   Per policy: ``longest_idle`` and ``least_active`` use heaps (O(log N)); ``skills_best`` ranks
   by each item's own skills and scans the queue's routable members (O(N)).
2. **Memory of agent actors**: a ``Node`` (asyncio, and trio in the full run) in a fresh process,
   100,000 agents logged in, the process RSS before and after, and how long the logins took.
   The journal is left out (it is measured in load.py) so the figure is the actors alone.

Run ``python -m benchmarks.scale --help``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

from acwd.core.config import Settings
from acwd.core.events import AgentChanged
from acwd.core.routing import Router
from acwd.core.views import RoutingView

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _view(agent_id: str, queue: str, idle_since: float, routable: bool = True) -> RoutingView:
    return RoutingView(
        agent_id=agent_id,
        routable=routable,
        free=1 if routable else 0,
        used=0 if routable else 1,
        idle_since=idle_since,
        skills={"english": 3},
        queues=(queue,),
        state="available" if routable else "busy",
    )


def _router(policy: str) -> Router:
    settings = Settings.from_dict(
        {
            "queues": {"agents": {"policy": policy}, "items": {"policy": policy}},
            "journal": {"path": ":memory:"},
        }
    )
    return Router(settings)


def route_decisions(n: int, decisions: int, policy: str, seed: int = 1) -> dict[str, float]:
    """Median and p99 µs of one decision with ``n`` agents and ``n`` waiting items."""
    rng = random.Random(seed)
    router = _router(policy)
    now = 1_000_000.0
    skills = {"english": 1} if policy == "skills_best" else None
    # N routable agents in queue "agents", idle since random moments.
    for i in range(n):
        router.apply(now, AgentChanged(_view(f"a{i}", "agents", now - rng.random() * 3600)))
    # N items waiting in queue "items", which only agent "x" serves (not routable yet).
    router.apply(now, AgentChanged(_view("x", "items", now, routable=False)))
    for i in range(n):
        router.submit(now - n + i, f"i{i}", "items")
    assert not router.dispatch(now), "nothing can match yet"
    gc.collect()

    agent_choice: list[float] = []
    item_choice: list[float] = []
    clock = time.perf_counter_ns
    for k in range(decisions):
        now += 0.001
        # An item arrives: the best of N agents.
        t0 = clock()
        router.submit(now, f"n{k}", "agents", skills=tuple(skills.items()) if skills else ())
        offers = router.dispatch(now)
        t1 = clock()
        assert len(offers) == 1
        chosen = offers[0].agent_id
        router.apply(now, AgentChanged(_view(chosen, "agents", now)))
        router.dispatch(now)
        agent_choice.append((t1 - t0) / 1000)
        # Agent x becomes routable: the best of N items.
        t0 = clock()
        router.apply(now, AgentChanged(_view("x", "items", now)))
        offers = router.dispatch(now)
        t1 = clock()
        assert len(offers) == 1
        item_choice.append((t1 - t0) / 1000)
        router.apply(now, AgentChanged(_view("x", "items", now, routable=False)))
        router.submit(now, f"m{k}", "items")
        router.dispatch(now)
    agent_choice.sort()
    item_choice.sort()
    return {
        "route_us": statistics.median(agent_choice),
        "route_p99_us": agent_choice[int(0.99 * len(agent_choice))],
        "route_item_us": statistics.median(item_choice),
        "route_item_p99_us": item_choice[int(0.99 * len(item_choice))],
    }


def routing(sizes: list[int], decisions: int, policies: list[str]) -> list[dict[str, Any]]:
    out = []
    for policy in policies:
        for n in sizes:
            # skills_best scans every member: fewer decisions keep the 100k case short.
            count = decisions if policy != "skills_best" else max(10, decisions * 100 // n)
            figures = route_decisions(n, count, policy)
            out.append({"agents": n, "items": n, "policy": policy, "decisions": count, **figures})
            print(
                f"  {policy:<13} {n:>7} agents/items: route {figures['route_us']:.1f} µs "
                f"(p99 {figures['route_p99_us']:.1f}), item choice "
                f"{figures['route_item_us']:.1f} µs",
                file=sys.stderr,
            )
    return out


# -- memory of agent actors -----------------------------------------------------------------------


async def _login_many(agents: int, batch: int) -> dict[str, Any]:
    import anyio

    from acwd.runtime.node import Node
    from benchmarks.simulate import _null_journal

    settings = Settings.from_dict(
        {"queues": {"q": {"policy": "longest_idle"}}, "journal": {"path": ":memory:"}}
    )
    node = Node(settings, journal=_null_journal())
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        gc.collect()
        rss0 = _rss_bytes()
        started = time.perf_counter()
        for first in range(0, agents, batch):
            async with anyio.create_task_group() as logins:
                for i in range(first, min(agents, first + batch)):
                    logins.start_soon(_login, node, f"agent{i:06d}")
        took = time.perf_counter() - started
        gc.collect()
        rss1 = _rss_bytes()
        assert len(node.actors) == agents
        routable = sum(1 for v in node.router.agents.values() if v.routable)
        tg.cancel_scope.cancel()
    return {
        "agents": agents,
        "rss_mb_before": rss0 / 2**20,
        "rss_mb_after": rss1 / 2**20,
        "mb": (rss1 - rss0) / 2**20,
        "bytes_per_agent": (rss1 - rss0) / agents,
        "login_s": took,
        "routable": routable,
    }


async def _login(node: Any, agent_id: str) -> None:
    await node.login(agent_id, None, capacity=1, queues=["q"])


def actor_memory_here(agents: int, loop: str) -> dict[str, Any]:
    """Run in a fresh process (``--memory-child``): log ``agents`` in and measure."""
    import logging

    import anyio
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    backend = "trio" if loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    result: dict[str, Any] = anyio.run(
        _login_many, agents, 1000, backend=backend, backend_options=options
    )
    result["loop"] = loop
    return result


def _start_memory_child(agents: int, loop: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "benchmarks.scale", "--memory-child", str(agents), "--loop", loop]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)


def _finish_memory_child(child: subprocess.Popen[str], agents: int, loop: str) -> dict[str, Any]:
    stdout, _ = child.communicate(timeout=900)
    if child.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({loop}, {agents} agents)")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    print(
        f"  {loop}: {agents} agent actors: {result['mb']:.0f} MB "
        f"({result['bytes_per_agent']:.0f} B each), logged in in {result['login_s']:.1f} s",
        file=sys.stderr,
    )
    return result


def actor_memory(agents: int, loop: str) -> dict[str, Any]:
    """Measure in a child process, so nothing else this process did is counted."""
    return _finish_memory_child(_start_memory_child(agents, loop), agents, loop)


def run(
    sizes: list[int], decisions: int, policies: list[str], memory_agents: int, loops: list[str]
) -> dict[str, Any]:
    """Routing in this process while the first memory child runs on the other core."""
    first = _start_memory_child(memory_agents, loops[0])
    routing_rows = routing(sizes, decisions, policies)
    memory = [_finish_memory_child(first, memory_agents, loops[0])]
    memory += [actor_memory(memory_agents, loop) for loop in loops[1:]]
    return {"routing": routing_rows, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="routing cost and actor memory at scale")
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--decisions", type=int, default=2000)
    p.add_argument("--policies", default="longest_idle,least_active,skills_best")
    p.add_argument("--memory-agents", type=int, default=100_000)
    p.add_argument("--loops", default="asyncio")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.memory_child:
        print(json.dumps(actor_memory_here(args.memory_child, args.loop)))
        return 0
    out = run(
        [int(s) for s in args.sizes.split(",")],
        args.decisions,
        args.policies.split(","),
        args.memory_agents,
        args.loops.split(","),
    )
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

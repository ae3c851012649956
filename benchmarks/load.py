"""Load against a real daemon: ``acwd serve`` as a separate process, driven over TCP.

One generator process (uvloop when installed, raw ``asyncio.Protocol`` and msgpack, pipelined)
plays every agent and customer, multiplexed over a few connections; the daemon runs on the
event loop under test. Per loop (asyncio, uvloop) it measures, in order:

1. **echo**: ``ping`` throughput of the bare echo server (``echo_server.py``) on the same loop:
   the limit. Both the anyio-stream echo (acwd's own IO layer) and a raw ``asyncio.Protocol``.
2. **rpc**: ``ping`` throughput of the daemon, same client, same connections and window.
3. **memory**: daemon RSS (from /proc) before and after logging in the agents.
4. **burst**: a few thousand ``work.submit`` at once, answers awaited: the throughput of a real
   request with the journal on (each answer waits for its group commit).
5. **steady**: Poisson customers on queue ``q`` at a modest rate (at most a quarter of the burst
   throughput, so the figures are not queueing in front of a saturated daemon), offers
   auto-accepted; each agent talks for an exponential time, sends ``work.end``, and a timed ACW
   follows (the daemon's timer ends it). Meanwhile a small team on queue ``b`` always has items
   waiting, so an ACW timer is what frees its agents.

Routing latency: from the moment both the item and its agent are ready (the later of: the
submit was sent; the agent's ACW deadline, or its login) to the moment the ``work.offered``
event is read by the client: "item ready last" on ``q``, "agent ready last" on ``b``. ACW
lateness: ``at - deadline`` of every ``acw.ended`` event (the daemon's own clock).

The daemon's ACW deadlines are on its clock (wall time at start + the loop's monotonic clock);
the client maps them onto its own monotonic clock with the offset measured by ``ping``
(best of many round trips). uvloop's clock has a 1 ms resolution (libuv), which bounds the
precision of that mapping on uvloop.

Run ``python -m benchmarks.load --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")
PING = msgpack.packb([0, 1, "ping", []])


# -- processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    port: int
    started_s: float  # from spawn to the "listening" line
    lines: list[dict[str, Any]] = field(default_factory=list)
    log: str = ""

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.log:
            Path(self.log).unlink(missing_ok=True)

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line the server logged (read before ``stop``, which removes the file)."""
        out = []
        with open(self.log, "rb") as f:
            for raw in f:
                with contextlib.suppress(ValueError):
                    out.append(json.loads(raw))
        return out


def spawn(argv: list[str], folder: Path, timeout: float = 120.0) -> Proc:
    """Start a server and wait for its JSON "rpc" line on stderr.

    stderr goes to a file, not a pipe: the daemon logs every state change, and a pipe the
    generator read too slowly would block the daemon's event loop on a full pipe.
    """
    started = time.perf_counter()
    fd, log = tempfile.mkstemp(prefix="server-", suffix=".log", dir=folder)
    with os.fdopen(fd, "wb") as stderr:
        popen = subprocess.Popen(argv, stderr=stderr, stdout=subprocess.DEVNULL, cwd=ROOT)
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    with open(log, "rb") as reader:
        while time.monotonic() < deadline:
            raw = reader.readline()
            if not raw.endswith(b"\n"):
                if popen.poll() is not None:
                    raise RuntimeError(f"{argv} exited early: {lines} {raw!r}")
                reader.seek(-len(raw), os.SEEK_CUR)
                time.sleep(0.005)
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            lines.append(line)
            if "rpc" in line:
                port = int(line["rpc"].rsplit(":", 1)[1])
                return Proc(popen, port, time.perf_counter() - started, lines, log)
    popen.kill()
    raise RuntimeError(f"{argv} did not start in {timeout} s")


DAEMON = [PYTHON, "-m", "acwd.cli"]  # --daemon-cmd replaces it (e.g. a patched build)


def daemon_argv(loop: str, config: Path) -> list[str]:
    return [
        *DAEMON,
        "serve",
        "--port",
        "0",
        "--config",
        str(config),
        "--loop",
        loop,
        "--log-format",
        "json",
        "--log-level",
        "info",
    ]


def write_config(folder: Path, journal: Path, acw_s: float) -> Path:
    path = folder / "acwd.toml"
    path.write_text(
        f"""
[server]
max_outbound_bytes = 67108864
max_connections = 64

[metrics]
port = 0

[journal]
path = "{journal}"

[defaults]
acw_mode = "timed"
acw_seconds = {acw_s}
offer_timeout_s = 0.0
disconnect_grace_s = 600.0

[queues.q]
policy = "longest_idle"

[queues.b]
policy = "longest_idle"
"""
    )
    return path


# -- the client -----------------------------------------------------------------------------------


class Rpc(asyncio.Protocol):
    """A pipelined msgpack-RPC connection: callbacks per msgid, events to ``on_event``."""

    def __init__(self, on_event: Callable[[dict[str, Any], float], None] | None = None) -> None:
        self.unpacker = msgpack.Unpacker(raw=False)
        self.transport: Any = None
        self.pending: dict[int, Callable[[Any, Any], None]] = {}
        self.on_event = on_event
        self.msgid = 0
        self.errors = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.unpacker.feed(data)
        for msg in self.unpacker:
            if msg[0] == 1:
                done = self.pending.pop(msg[1], None)
                if msg[2] is not None:
                    self.errors += 1
                if done is not None:
                    done(msg[2], msg[3])
            elif msg[0] == 2 and self.on_event is not None:
                for event in msg[2]:
                    self.on_event(event, now)

    def send(self, method: str, args: dict[str, Any], done: Callable[[Any, Any], None]) -> None:
        self.msgid = (self.msgid + 1) & 0xFFFFFFFF
        self.pending[self.msgid] = done
        self.transport.write(msgpack.packb([0, self.msgid, method, [args] if args else []]))

    def call(self, method: str, args: dict[str, Any] | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(error: Any, result: Any) -> None:
            if not future.done():
                if error is not None:
                    future.set_exception(RuntimeError(f"{method}: {error}"))
                else:
                    future.set_result(result)

        self.send(method, args or {}, done)
        return future


async def connect(port: int, protocol: Callable[[], asyncio.Protocol]) -> Any:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(protocol, "127.0.0.1", port)
    return proto


class _Flood(asyncio.Protocol):
    """Keeps ``window`` pings in flight: every answer read is replaced by a new request."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.unpacker = msgpack.Unpacker(raw=False)
        self.count = 0
        self.running = True
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(PING * self.window)

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        n = sum(1 for _ in self.unpacker)
        self.count += n
        if self.running:
            self.transport.write(PING * n)


async def ping_throughput(
    port: int, connections: int, window: int, seconds: float, pid: int | None = None
) -> dict[str, float]:
    """Answers per second with ``connections`` x ``window`` pings always in flight."""
    floods = [await connect(port, lambda: _Flood(window)) for _ in range(connections)]
    await asyncio.sleep(min(1.0, seconds / 4))  # warm up
    start, counted = time.monotonic(), sum(f.count for f in floods)
    cpu0 = _cpu(pid)
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - start
    total = sum(f.count for f in floods) - counted
    cpu = (_cpu(pid) - cpu0) / elapsed if pid else float("nan")
    for f in floods:
        f.running = False
        f.transport.close()
    await asyncio.sleep(0.05)
    return {"rpc_per_s": total / elapsed, "server_cpu": cpu}


def _cpu(pid: int | None) -> float:
    if pid is None:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def clock_offset(rpc: Rpc, samples: int = 200) -> tuple[float, float]:
    """(daemon clock - client monotonic clock, round trip) from the fastest of many pings."""
    best = (float("inf"), 0.0)
    for _ in range(samples):
        t0 = time.monotonic()
        answer = await rpc.call("ping")
        t1 = time.monotonic()
        best = min(best, (t1 - t0, answer["time"] - (t0 + t1) / 2))
    return best[1], best[0]


# -- the contact centre ---------------------------------------------------------------------------


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    if not values:
        return {"n": 0}
    v = sorted(values)

    def q(p: float) -> float:
        return v[min(len(v) - 1, int(p * len(v)))] * scale

    return {
        "n": len(v),
        "p50": q(0.50),
        "p90": q(0.90),
        "p99": q(0.99),
        "p999": q(0.999),
        "max": v[-1] * scale,
        "mean": statistics.fmean(v) * scale,
    }


class Centre:
    """Simulated agents and customers over a few connections to one daemon.

    Two teams: ``agents`` agents on queue ``q`` (idle most of the time, so an arriving item
    finds an agent: the submit is what makes the pair ready), and a small ``backlog_team`` on
    queue ``b`` that always has items waiting (the ACW timer that frees an agent is what makes
    the pair ready).
    """

    def __init__(self, agents: int, backlog_team: int, talk_s: float, seed: int = 7) -> None:
        self.agents = agents
        self.backlog_team = backlog_team
        self.talk_s = talk_s
        self.rng = random.Random(seed)
        self.conns: list[Rpc] = []
        self.agent_conn: dict[str, Rpc] = {}
        self.agent_ready: dict[str, float] = {}  # client monotonic time the agent became ready
        self.submitted: dict[str, float] = {}  # work_id -> when its submit was sent
        self.offset = 0.0  # daemon clock - client clock
        self.rtt = 0.0
        self.phase = "idle"
        self.latency: dict[str, dict[str, list[float]]] = {}
        self.lateness: dict[str, list[float]] = {}
        self.offered = 0
        self.acw_ended = 0
        self.seq = 0
        self.refill_b = False  # keep queue b's backlog topped up
        self.loop = asyncio.get_running_loop()

    async def open(self, port: int, connections: int) -> None:
        for _ in range(connections):
            self.conns.append(await connect(port, lambda: Rpc(self.on_event)))
        self.offset, self.rtt = await clock_offset(self.conns[0])

    def on_event(self, event: dict[str, Any], now: float) -> None:
        kind = event["type"]
        if kind == "work.offered":
            self.offered += 1
            work_id, agent_id = event["work_id"], event["agent_id"]
            sent = self.submitted.pop(work_id, None)
            ready = self.agent_ready.get(agent_id, 0.0)
            if sent is not None:
                trigger = "item_ready_last" if sent >= ready else "agent_ready_last"
                phase = self.latency.setdefault(self.phase, {})
                phase.setdefault(trigger, []).append(now - max(sent, ready))
            talk = self.rng.expovariate(1.0 / self.talk_s)
            self.loop.call_later(talk, self.end, work_id, agent_id)
            self.agent_ready[agent_id] = float("inf")  # busy until its ACW deadline is known
            if self.refill_b and event.get("queue") == "b":
                self.submit("b")
        elif kind == "acw.started":
            if event.get("deadline") is not None:
                self.agent_ready[event["agent_id"]] = event["deadline"] - self.offset
        elif kind == "acw.ended":
            self.acw_ended += 1
            if event.get("deadline") is not None:
                self.lateness.setdefault(self.phase, []).append(event["at"] - event["deadline"])

    def end(self, work_id: str, agent_id: str) -> None:
        self.agent_conn[agent_id].send("work.end", {"work_id": work_id}, _ignore)

    def submit(self, queue: str = "q") -> None:
        self.seq += 1
        work_id = f"w{self.seq}"
        conn = self.conns[self.seq % len(self.conns)]
        self.submitted[work_id] = time.monotonic()
        conn.send("work.submit", {"queue": queue, "work_id": work_id}, _ignore)

    async def login_all(self, window: int = 512) -> float:
        """Log every agent in on its connection (which then receives its events); returns s."""
        started = time.monotonic()
        sem = asyncio.Semaphore(window)

        async def one(agent_id: str, queue: str, conn: Rpc) -> None:
            async with sem:
                await conn.call("agent.login", {"agent_id": agent_id, "queues": [queue]})
            self.agent_conn[agent_id] = conn
            self.agent_ready[agent_id] = time.monotonic()

        n = len(self.conns)
        team_q = (one(f"a{i:06d}", "q", self.conns[i % n]) for i in range(self.agents))
        team_b = (one(f"b{i:04d}", "b", self.conns[i % n]) for i in range(self.backlog_team))
        await asyncio.gather(*team_q, *team_b)
        return time.monotonic() - started

    async def steady(self, rate: float, seconds: float) -> None:
        """Poisson arrivals at ``rate`` per second on q for ``seconds``; b kept backlogged."""
        self.phase = "steady"
        for _ in range(2 * self.backlog_team):
            self.submit("b")
        self.refill_b = True
        due = time.monotonic()
        stop = due + seconds
        while True:
            now = time.monotonic()
            if now >= stop:
                break
            while due <= now:
                self.submit()
                due += self.rng.expovariate(rate)
            await asyncio.sleep(max(0.0, min(due, stop) - time.monotonic()))
        self.refill_b = False

    async def settle(self, timeout: float) -> bool:
        """Wait until every item has been offered and every ACW has ended."""
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            if not self.submitted and self.acw_ended >= self.offered:
                return True
            await asyncio.sleep(0.05)
        return False

    async def burst(self, items: int) -> float:
        """Submit ``items`` at once (pipelined, answers awaited); returns submits per second."""
        self.phase = "burst"
        started = time.monotonic()
        sem = asyncio.Semaphore(1024)

        async def one() -> None:
            async with sem:
                self.seq += 1
                work_id = f"w{self.seq}"
                conn = self.conns[self.seq % len(self.conns)]
                self.submitted[work_id] = time.monotonic()
                await conn.call("work.submit", {"queue": "q", "work_id": work_id})

        await asyncio.gather(*(one() for _ in range(items)))
        return items / (time.monotonic() - started)


def _ignore(error: Any, result: Any) -> None:
    pass


class Usage:
    """CPU and run-queue wait of a process over an interval (/proc/PID/stat and schedstat).

    Run-queue wait is time the process was ready to run but another process had the CPU: on a
    shared machine it shows how much the figures were disturbed.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.t0, self.cpu0, self.wait0 = time.monotonic(), _cpu(pid), _runqueue_wait(pid)

    def read(self) -> dict[str, float]:
        dt = time.monotonic() - self.t0
        return {
            "cpu": (_cpu(self.pid) - self.cpu0) / dt,
            "runqueue_wait": (_runqueue_wait(self.pid) - self.wait0) / dt,
        }


def _runqueue_wait(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


# -- one loop kind --------------------------------------------------------------------------------


@dataclass
class Plan:
    agents: int = 10_000
    backlog_team: int = 50
    connections: int = 4
    window: int = 64
    ping_s: float = 3.0
    steady_s: float = 10.0
    rate: float = 300.0  # customers per second on q in the steady phase, at most
    load_share: float = 0.25  # ... and at most this share of the measured submit throughput
    burst: int = 3000  # items submitted at once to measure throughput
    talk_s: float = 2.0
    acw_s: float = 1.0
    profile: str | None = None  # folder for py-spy profiles of the daemon (collapsed stacks)


def _profile(pid: int, folder: str | None, loop: str) -> subprocess.Popen[bytes] | None:
    """Sample the daemon with py-spy for the whole run, when asked (``--profile DIR``)."""
    if folder is None:
        return None
    spy = Path(PYTHON).with_name("py-spy")
    out = Path(folder) / f"daemon-{loop}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        str(spy),
        "record",
        "--pid",
        str(pid),
        "--format",
        "raw",
        "--rate",
        "200",
        "--nonblocking",
    ]
    return subprocess.Popen(
        [*argv, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def _echo(loop: str, impl: str, plan: Plan, folder: Path) -> dict[str, float]:
    argv = [PYTHON, "-m", "benchmarks.echo_server", "--loop", loop, "--impl", impl]
    proc = spawn(argv, folder)
    try:
        return await ping_throughput(
            proc.port, plan.connections, plan.window, plan.ping_s, proc.pid
        )
    finally:
        proc.stop()


def _latencies(centre: Centre, phase: str) -> dict[str, Any]:
    triggers = centre.latency.get(phase, {})
    return {
        "all": percentiles([x for xs in triggers.values() for x in xs]),
        **{trigger: percentiles(xs) for trigger, xs in sorted(triggers.items())},
    }


async def _daemon(loop: str, plan: Plan, folder: Path) -> dict[str, Any]:
    journal = folder / f"{loop}.db"
    config = write_config(folder, journal, plan.acw_s)
    proc = spawn(daemon_argv(loop, config), folder)
    out: dict[str, Any] = {"startup_s": proc.started_s}
    spy = _profile(proc.pid, plan.profile, loop)
    try:
        usage = Usage(proc.pid)
        ping = await ping_throughput(
            proc.port, plan.connections, plan.window, plan.ping_s, proc.pid
        )
        out["rpc_per_s"] = ping["rpc_per_s"]
        out["ping_usage"] = usage.read()

        centre = Centre(plan.agents, plan.backlog_team, plan.talk_s)
        await centre.open(proc.port, plan.connections)
        out["clock_rtt_ms"] = centre.rtt * 1000
        rss0 = proc.rss_bytes()
        login_s = await centre.login_all()
        await asyncio.sleep(0.5)
        rss1 = proc.rss_bytes()
        agents = plan.agents + plan.backlog_team
        out["login_per_s"] = agents / login_s
        out["rss_mb_before_agents"] = rss0 / 2**20
        out["rss_mb_with_agents"] = rss1 / 2**20
        out["rss_mb_per_1k_agents"] = (rss1 - rss0) / 2**20 / agents * 1000

        # Throughput of a real request (submit, journal on), then let the centre go idle.
        usage = Usage(proc.pid)
        out["submit_per_s"] = await centre.burst(min(plan.burst, plan.agents))
        out["burst_usage"] = usage.read()
        out["burst_settled"] = await centre.settle(60.0)

        rate = min(plan.rate, plan.load_share * out["submit_per_s"])
        usage = Usage(proc.pid)
        out["steady_wall"] = [time.time()]
        await centre.steady(rate, plan.steady_s)
        out["steady_wall"].append(time.time())
        steady_usage = usage.read()
        out["steady"] = {
            "customers_per_s": rate,
            "backlog_team": plan.backlog_team,
            "seconds": plan.steady_s,
            "settled": await centre.settle(60.0),
            **steady_usage,
        }
        out["rss_mb_after_traffic"] = proc.rss_bytes() / 2**20
        out["errors"] = sum(c.errors for c in centre.conns)
        out["offers"] = centre.offered
        with open(proc.log, "rb") as f:
            out["daemon_log_lines"] = sum(1 for _ in f)

        out["routing_latency_ms"] = _latencies(centre, "steady")
        out["routing_latency_burst_ms"] = _latencies(centre, "burst")
        out["acw_lateness_ms"] = percentiles(centre.lateness.get("steady", []))
        out["acw_lateness_burst_ms"] = percentiles(centre.lateness.get("burst", []))
        out["journal_mb"] = (
            sum(p.stat().st_size for p in folder.glob(f"{loop}.db*") if p.is_file()) / 2**20
        )
        for conn in centre.conns:
            conn.transport.close()
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        proc.stop()
    out["journal"] = str(journal)
    return out


async def recovery(folder: Path, loop: str, acw_s: float) -> dict[str, Any]:
    """Restart on the journal a load run left (its agents and recent items) vs an empty one."""
    journal = folder / f"{loop}.db"
    config = write_config(folder, journal, acw_s)
    empty_config = write_config(folder / "empty", folder / "empty" / "e.db", acw_s)
    with_state = spawn(daemon_argv(loop, config), folder)
    with_state.stop()
    empty = spawn(daemon_argv(loop, empty_config), folder)
    empty.stop()
    recovered = next((ln for ln in with_state.lines if "recovered" in ln.get("event", "")), {})
    return {
        "agents": recovered.get("agents"),
        "items": recovered.get("items"),
        "acw_resumed": recovered.get("acw_resumed"),
        "read_s": recovered.get("seconds"),
        "startup_s": with_state.started_s,
        "empty_startup_s": empty.started_s,
        "recovery_s": with_state.started_s - empty.started_s,
        "journal_mb": sum(p.stat().st_size for p in folder.glob(f"{loop}.db*")) / 2**20,
    }


async def run_loop(loop: str, plan: Plan, folder: Path) -> dict[str, Any]:
    echo = await _echo(loop, "anyio", plan, folder)
    echo_raw = await _echo(loop, "protocol", plan, folder)
    daemon = await _daemon(loop, plan, folder)
    result = {
        "loop": loop,
        "agents": plan.agents,
        "connections": plan.connections,
        "window": plan.window,
        "rpc_per_s": daemon["rpc_per_s"],
        "echo_rpc_per_s": echo["rpc_per_s"],
        "ratio_to_echo": daemon["rpc_per_s"] / echo["rpc_per_s"],
        "echo_protocol_rpc_per_s": echo_raw["rpc_per_s"],
        "ratio_to_echo_protocol": daemon["rpc_per_s"] / echo_raw["rpc_per_s"],
        "routing_latency_ms": {
            k: daemon["routing_latency_ms"]["all"].get(k) for k in ("p50", "p99", "p999")
        },
        "acw_lateness_ms": {k: daemon["acw_lateness_ms"].get(k) for k in ("p50", "p99")},
        "rss_mb_per_1k_agents": daemon["rss_mb_per_1k_agents"],
        "detail": {
            **daemon,
            "echo_server_cpu": echo["server_cpu"],
            "echo_protocol_server_cpu": echo_raw["server_cpu"],
        },
    }
    return result


async def run(loops: list[str], plan: Plan, with_recovery: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench7-load-") as tmp:
        folder = Path(tmp)
        (folder / "empty").mkdir()
        results = [await run_loop(loop, plan, folder) for loop in loops]
        rec = await recovery(folder, loops[0], plan.acw_s) if with_recovery else None
    return {"loops": results, "recovery": rec}


def _generator_loop() -> None:
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # the generator works on plain asyncio too, only slower
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="load against a real acwd daemon")
    p.add_argument("--loops", default="asyncio,uvloop")
    p.add_argument("--agents", type=int, default=Plan.agents)
    p.add_argument("--rate", type=float, default=Plan.rate, help="customers per second, at most")
    p.add_argument("--steady", type=float, default=Plan.steady_s, help="seconds")
    p.add_argument("--ping", type=float, default=Plan.ping_s, help="seconds per throughput run")
    p.add_argument("--no-recovery", action="store_true")
    p.add_argument("--profile", help="record py-spy profiles of the daemon into this folder")
    p.add_argument(
        "--daemon-cmd",
        help="command that runs the acwd CLI (default: this Python -m acwd.cli), for comparing"
        " builds",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    plan = Plan(
        agents=args.agents,
        rate=args.rate,
        steady_s=args.steady,
        ping_s=args.ping,
        profile=args.profile,
    )
    if args.daemon_cmd:
        DAEMON[:] = shlex.split(args.daemon_cmd)
    _generator_loop()
    out = asyncio.run(run(args.loops.split(","), plan, not args.no_recovery))
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

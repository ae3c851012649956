"""What Prometheus metrics cost the daemon: RPC throughput with ``[metrics]`` off vs on.

One run starts two ``acwd serve`` processes side by side, identical but for ``[metrics] port``
(0 = off; on = a free port, scraped once a second during the run, as Prometheus would), and
alternates measurement rounds between them so both see the same machine. Each round measures:

- ping: ``--pings`` pipelined ``ping`` requests on one connection (requests per second);
- lifecycle: ``--agents`` agents in parallel, each on its own connection and queue, each taking
  ``--items`` items through submit -> work.offered event -> accept -> end -> acw.complete
  (lifecycles per second; 4 requests each).

Also: the daemon's CPU per operation (from /proc, robust to a busy machine where throughput is
not), the daemon's CPU per scrape, and, in process, the cost per event of ``Metrics.observe``
and per request of ``request_done``.
Prints the medians over ``--rounds`` and the on/off ratios, and writes them with every round to
benchmarks/results/metrics_overhead.json.

    .venv/bin/python benchmarks/metrics_overhead.py [--rounds 7] [--pings 20000] [--agents 20]
        [--items 50] [--loop asyncio|uvloop|trio] [--journal memory|file]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from prometheus_client import CollectorRegistry

from acwd import __version__
from acwd.core.center import Center
from acwd.core.config import Settings
from acwd.core.views import Wrapup
from acwd.metrics import Metrics
from acwd.protocol.framing import encode_request
from acwd.runtime.node import Node

RESULTS = Path(__file__).resolve().parent / "results" / "metrics_overhead.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Daemon:
    """One ``acwd serve`` subprocess with K single-agent queues."""

    def __init__(self, name: str, metrics_port: int, agents: int, args: argparse.Namespace):
        self.name = name
        self.metrics_port = metrics_port
        self.dir = tempfile.TemporaryDirectory(prefix=f"acwd-bench-{name}-")
        journal = ":memory:" if args.journal == "memory" else f"{self.dir.name}/acwd.db"
        queues = "\n".join(f'[queues.q{i}]\nchannel = "chat"\n' for i in range(agents))
        config = Path(self.dir.name) / "acwd.toml"
        config.write_text(
            f'[metrics]\nport = {metrics_port}\n[journal]\npath = "{journal}"\n'
            f"[defaults]\noffer_timeout_s = 60.0\nacw_seconds = 600.0\n{queues}"
        )
        self.log = Path(self.dir.name) / "acwd.log"
        command = [sys.executable, "-m", "acwd.cli", "serve", "--config", str(config)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*command, "--port", "0", "--log-format", "json", "--loop", args.loop],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"acwd {self.name} exited:\n{self.log.read_text()}")
            for line in self.log.read_text().splitlines():
                if '"acwd listening"' in line:
                    return int(json.loads(line)["rpc"].rsplit(":", 1)[1])
            time.sleep(0.05)
        raise RuntimeError(f"acwd {self.name} did not start")

    def cpu_seconds(self) -> float:
        """User + system CPU time the daemon has used (Linux /proc; resolution one tick)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


class Connection:
    """A raw msgpack-RPC client connection: responses by msgid, events to a queue."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.msgid = 0
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def _read(self) -> None:
        unpacker = msgpack.Unpacker()
        while data := await self.reader.read(262144):
            unpacker.feed(data)
            for message in unpacker:
                if message[0] == 1:
                    future = self.waiting.pop(message[1])
                    if message[2] is not None:
                        future.set_exception(RuntimeError(str(message[2])))
                    else:
                        future.set_result(message[3])
                else:
                    self.events.put_nowait(message[2][0])
        for future in self.waiting.values():  # the daemon went away: fail, do not hang
            future.set_exception(ConnectionError("acwd closed the connection"))
        self.events.put_nowait({"type": "closed", "work_id": None})

    async def call(self, method: str, **params: Any) -> Any:
        self.msgid += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.msgid] = future
        self.writer.write(encode_request(self.msgid, method, [params] if params else []))
        return await future

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()


async def pings(port: int, count: int) -> float:
    """Pipelined pings on one connection; requests per second."""
    conn = await Connection.open(port)
    await conn.call("ping")
    started = time.perf_counter()
    futures = []
    for start in range(0, count, 500):  # batches keep the daemon's in-flight window busy
        chunk = []
        for _ in range(min(500, count - start)):
            conn.msgid += 1
            future = asyncio.get_running_loop().create_future()
            conn.waiting[conn.msgid] = future
            futures.append(future)
            chunk.append(encode_request(conn.msgid, "ping", []))
        conn.writer.write(b"".join(chunk))
        await conn.writer.drain()
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    await conn.close()
    return count / elapsed


async def lifecycles(port: int, agents: int, items: int, tag: str) -> float:
    """Parallel agents, each its own queue; lifecycles per second."""
    conns = [await Connection.open(port) for _ in range(agents)]
    for i, conn in enumerate(conns):
        await conn.call("agent.login", agent_id=f"a{i}", queues=[f"q{i}"])

    async def agent(i: int, conn: Connection) -> None:
        for n in range(items):
            work_id = f"{tag}-{i}-{n}"
            await conn.call("work.submit", work_id=work_id, queue=f"q{i}")
            while True:  # our own work.* events always come to the agent's connection
                event = await conn.events.get()
                if event["type"] == "closed":
                    raise ConnectionError("acwd closed the connection")
                if event["type"] == "work.offered" and event["work_id"] == work_id:
                    break
            await conn.call("work.accept", work_id=work_id)
            await conn.call("work.end", work_id=work_id)
            await conn.call("acw.complete", work_id=work_id, disposition="done")

    started = time.perf_counter()
    await asyncio.gather(*(agent(i, conn) for i, conn in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for i, conn in enumerate(conns):
        await conn.call("agent.logout", agent_id=f"a{i}")
        await conn.close()
    return agents * items / elapsed


def hot_path(repeat: int = 20000) -> dict[str, float]:
    """In process: microseconds per event through ``Metrics.observe`` (the events of one real
    lifecycle, from the pure core) and per ``request_done``."""
    settings = Settings.from_dict({"journal": {"path": ":memory:"}})
    center = Center(settings)
    events = list(center.login(0.0, "a1").events)
    for outcome in (
        center.submit(1.0, "w1", "default"),
        center.accept(2.0, "w1"),
        center.end(3.0, "w1"),
        center.acw_complete(4.0, "w1", Wrapup(disposition="done")),
    ):
        events.extend(outcome.events)
    metrics = Metrics(Node(settings), CollectorRegistry())
    observe = metrics.observe
    started = time.perf_counter()
    for _ in range(repeat):
        for event in events:
            observe(event)
    per_event = (time.perf_counter() - started) / (repeat * len(events))
    request_done = metrics.request_done
    started = time.perf_counter()
    for _ in range(repeat):
        request_done("work.submit", "ok", 0.0002)
    per_request = (time.perf_counter() - started) / repeat
    return {
        "events_per_lifecycle": len(events),
        "observe_us_per_event": per_event * 1e6,
        "request_done_us": per_request * 1e6,
    }


class Scraper(threading.Thread):
    """GET /metrics once a second, as Prometheus would; records how long each scrape took."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.stopping = threading.Event()
        self.durations: list[float] = []
        self.errors: list[str] = []
        self.size = 0

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    self.size = len(response.read())
            except OSError as exc:
                self.errors.append(str(exc))
                continue
            self.durations.append(time.perf_counter() - started)


def scrape_cost(daemon: Daemon, scrapes: int = 30) -> float:
    """The daemon's CPU milliseconds per scrape, measured while it has nothing else to do."""
    url = f"http://127.0.0.1:{daemon.metrics_port}/metrics"
    started = daemon.cpu_seconds()
    for _ in range(scrapes):
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
    return (daemon.cpu_seconds() - started) / scrapes * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--pings", type=int, default=20000)
    p.add_argument("--agents", type=int, default=20)
    p.add_argument("--items", type=int, default=50)
    p.add_argument("--loop", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    p.add_argument("--journal", choices=("memory", "file"), default="memory")
    p.add_argument("--output", type=Path, default=RESULTS)
    args = p.parse_args()

    daemons = {
        "off": Daemon("off", 0, args.agents, args),
        "on": Daemon("on", free_port(), args.agents, args),
    }
    scraper = Scraper(daemons["on"].metrics_port)
    scraper.start()
    rounds: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        for r in range(args.rounds):
            # Alternate which goes first, so neither always runs on a warmer machine.
            order = ("off", "on") if r % 2 == 0 else ("on", "off")
            for name in order:
                daemon = daemons[name]
                cpu = daemon.cpu_seconds()
                ping_rate = asyncio.run(pings(daemon.port, args.pings))
                ping_cpu = daemon.cpu_seconds() - cpu
                cpu = daemon.cpu_seconds()
                items = args.agents * args.items
                lifecycle_rate = asyncio.run(
                    lifecycles(daemon.port, args.agents, args.items, f"r{r}")
                )
                lifecycle_cpu = daemon.cpu_seconds() - cpu
                figures = {
                    "ping_per_s": ping_rate,
                    "lifecycles_per_s": lifecycle_rate,
                    "cpu_us_per_ping": ping_cpu / args.pings * 1e6,
                    "cpu_us_per_lifecycle": lifecycle_cpu / items * 1e6,
                }
                rounds[name].append(figures)
                print(
                    f"round {r + 1}/{args.rounds} metrics {name:>3}: "
                    f"{ping_rate:8.0f} ping/s ({figures['cpu_us_per_ping']:5.0f} us CPU each)  "
                    f"{lifecycle_rate:7.1f} lifecycles/s "
                    f"({figures['cpu_us_per_lifecycle']:6.0f} us CPU each)",
                    flush=True,
                )
        scraper.stopping.set()
        scraper.join(timeout=15)
        scrape_cpu_ms = scrape_cost(daemons["on"])
    finally:
        scraper.stopping.set()
        for daemon in daemons.values():
            daemon.stop()
        scraper.join(timeout=15)

    hot = hot_path()
    keys = ("ping_per_s", "lifecycles_per_s", "cpu_us_per_ping", "cpu_us_per_lifecycle")
    medians = {
        name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in rounds.items()
    }
    ratios = {k: medians["on"][k] / medians["off"][k] for k in keys}
    # The on/off CPU difference per operation, less the share of the once-a-second scrapes
    # (their CPU over the time one operation took): what the hot path itself costs.
    estimate = {
        "per_ping": medians["on"]["cpu_us_per_ping"]
        - medians["off"]["cpu_us_per_ping"]
        - scrape_cpu_ms * 1000 / medians["on"]["ping_per_s"],
        "per_lifecycle": medians["on"]["cpu_us_per_lifecycle"]
        - medians["off"]["cpu_us_per_lifecycle"]
        - scrape_cpu_ms * 1000 / medians["on"]["lifecycles_per_s"],
    }
    result = {
        "benchmark": "metrics_overhead",
        "acwd_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "parameters": {
            k: getattr(args, k) for k in ("rounds", "pings", "agents", "items", "loop", "journal")
        },
        "scrape": {
            "interval_s": 1.0,
            "count": len(scraper.durations),
            "median_s": statistics.median(scraper.durations) if scraper.durations else None,
            "bytes": scraper.size,
            "daemon_cpu_ms_per_scrape": scrape_cpu_ms,
            "errors": scraper.errors[:10],
        },
        "cpu_us_hot_path_estimate": estimate,
        "median": medians,
        "ratio_on_over_off": ratios,
        "hot_path": hot,
        "rounds": rounds,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'median':<14}{'off':>12}{'on':>14}{'on/off':>10}")
    labels = ("ping/s", "lifecycles/s", "CPU us/ping", "CPU us/lifec.")
    for key, label in zip(keys, labels, strict=True):
        off, on = medians["off"][key], medians["on"][key]
        print(f"{label:<14}{off:12.1f}{on:14.1f}{ratios[key]:10.3f}")
    if scraper.durations:
        print(
            f"scrapes: {len(scraper.durations)}, median {statistics.median(scraper.durations):.4f}"
            f" s, {scraper.size} bytes, {scrape_cpu_ms:.1f} ms daemon CPU each"
        )
    print(
        f"CPU difference less scrapes: {estimate['per_ping']:.1f} us per ping, "
        f"{estimate['per_lifecycle']:.0f} us per lifecycle"
    )
    print(
        f"hot path: {hot['observe_us_per_event']:.2f} us per event "
        f"({hot['events_per_lifecycle']} events per lifecycle), "
        f"{hot['request_done_us']:.2f} us per request"
    )
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()

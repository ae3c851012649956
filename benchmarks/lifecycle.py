"""Cost of one full item lifecycle: submit -> offer -> accept -> end -> ACW -> complete.

Three figures from one run, each the median over batches:
- core: the pure ``Center`` (no event loop, no IO) — the floor;
- node: the running actors in-process (asyncio, in-memory journal), with the default 2 ms
  group-commit window and with none;
- tcp: a real ``acwd serve`` process over loopback, one client connection, with its journal file.

    .venv/bin/python benchmarks/lifecycle.py [--items N] [--batches B]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import msgpack

from acwd.core.center import Center
from acwd.core.config import Settings
from acwd.core.views import Wrapup
from acwd.runtime.node import Node

SETTINGS = {"defaults": {"offer_timeout_s": 20.0}, "journal": {"path": ":memory:"}}


def bench_core(items: int) -> float:
    center = Center(Settings.from_dict(SETTINGS))
    now = 0.0
    center.login(now, "alice")
    started = time.perf_counter()
    for i in range(items):
        now += 1.0
        work_id = f"w{i}"
        center.submit(now, work_id, "default")
        center.accept(now, work_id)
        center.end(now, work_id)
        center.acw_complete(now, work_id, Wrapup(disposition="done"))
    return (time.perf_counter() - started) / items


async def bench_node(items: int, commit_ms: float = 2.0) -> float:
    journal = {"path": ":memory:", "commit_interval_ms": commit_ms}
    node = Node(Settings.from_dict({**SETTINGS, "journal": journal}))
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        await node.login("alice", None)
        started = time.perf_counter()
        for i in range(items):
            work_id = f"w{i}"
            await node.submit(work_id, "default")
            while node.work_view(work_id).state != "offered":
                await anyio.sleep(0)
            await node.accept(work_id)
            await node.end(work_id)
            await node.acw_complete(work_id, Wrapup(disposition="done"))
        elapsed = time.perf_counter() - started
        tg.cancel_scope.cancel()
    return elapsed / items


class Rpc:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.unpacker = msgpack.Unpacker(raw=False)
        self.msgid = 0
        self.offered: set[str] = set()

    def call(self, method: str, **args: Any) -> Any:
        self.msgid += 1
        self.sock.sendall(msgpack.packb([0, self.msgid, method, [args]]))
        while True:
            for msg in self.unpacker:
                if msg[0] == 2 and msg[2][0]["type"] == "work.offered":
                    self.offered.add(msg[2][0]["work_id"])
                elif msg[0] == 1 and msg[1] == self.msgid:
                    if msg[2]:
                        raise RuntimeError(msg[2])
                    return msg[3]
            self.unpacker.feed(self.sock.recv(65536))

    def wait_offer(self, work_id: str) -> None:
        while True:
            for msg in self.unpacker:  # what is buffered first, then the socket
                if msg[0] == 2 and msg[2][0]["type"] == "work.offered":
                    self.offered.add(msg[2][0]["work_id"])
            if work_id in self.offered:
                return
            self.unpacker.feed(self.sock.recv(65536))


def bench_tcp(items: int, batches: int, folder: Path) -> list[float]:
    config = folder / "acwd.toml"
    config.write_text(f'[journal]\npath = "{folder / "acwd.db"}"\n[metrics]\nport = 0\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "acwd.cli", "serve", "--port", "0", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if '"acwd listening"' in line:
            port = int(json.loads(line)["rpc"].rsplit(":", 1)[1])
            break
    # Keep reading the daemon's log, or a full pipe would stall it.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        rpc = Rpc(port)
        rpc.call("agent.login", agent_id="alice")
        out = []
        for b in range(batches):
            started = time.perf_counter()
            for i in range(items):
                work_id = f"b{b}w{i}"
                rpc.call("work.submit", queue="default", work_id=work_id)
                rpc.wait_offer(work_id)
                rpc.call("work.accept", work_id=work_id)
                rpc.call("work.end", work_id=work_id)
                rpc.call("acw.complete", work_id=work_id, disposition="done")
            out.append((time.perf_counter() - started) / items)
        return out
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--batches", type=int, default=5)
    args = p.parse_args()
    core = [bench_core(args.items) for _ in range(args.batches)]
    node = [anyio.run(bench_node, args.items) for _ in range(args.batches)]
    no_window = [anyio.run(bench_node, args.items, 0.0) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        tcp = bench_tcp(args.items, args.batches, Path(tmp))
    result = {
        "items_per_batch": args.items,
        "batches": args.batches,
        "cpu_count": os.cpu_count(),
        "core_us": statistics.median(core) * 1e6,
        "node_us": statistics.median(node) * 1e6,
        "node_commit_window_0_us": statistics.median(no_window) * 1e6,
        "tcp_us": statistics.median(tcp) * 1e6,
    }
    result["tcp_over_core"] = result["tcp_us"] / result["core_us"]
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "lifecycle.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

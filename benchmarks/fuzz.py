"""A long fuzz run: hostile and mutated input to the decoder in-process and to a running daemon.

1. In-process: random bytes, hostile msgpack and mutations of valid requests (bytes flipped,
   inserted, cut, duplicated; values swapped for hostile ones; keys renamed or dropped; methods
   swapped), fed in random splits to `FrameDecoder` and `parse_request`. Anything but
   `ProtocolError` / `DomainError`, or an error message longer than 1000 characters, is a failure.
2. Over TCP: ``--connections`` clients send the same kinds of input to an ``acwd serve`` process
   (journal on disk), pipelined, sometimes trickled, sometimes reset, while an honest client runs
   full lifecycles (submit, auto-accept, end, wrap up) and records every acknowledgement and the
   latency of every call.
3. Then: the daemon must still be up, a fresh lifecycle must work, every acknowledged submit and
   wrap-up must be there; the daemon is stopped (SIGTERM), restarted on the same journal, and
   everything acknowledged must be there again.

Figures go to ``benchmarks/results/fuzz.json``; the exit status is 1 if anything failed.

    .venv/bin/python benchmarks/fuzz.py [--seconds 120] [--decoder-seconds 30] [--connections 64]
    make fuzz FUZZ_ARGS="--seconds 600"
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
from anyio.abc import SocketAttribute

from acwd.client import Client
from acwd.core.errors import DomainError
from acwd.protocol.framing import FrameDecoder, ProtocolError
from acwd.protocol.messages import METHODS, parse_request

MAX_ERROR_CHARS = 1000

# --- inputs -------------------------------------------------------------------------------------

VALID: dict[str, dict[str, Any]] = {
    "hello": {"client": "fuzz/1"},
    "ping": {},
    "subscribe": {"topics": ["agent", "work"], "queue": "default"},
    "unsubscribe": {"topics": ["work"]},
    "agent.login": {"agent_id": "a1", "capacity": 2, "skills": {"en": 3}, "queues": ["default"]},
    "agent.logout": {"agent_id": "a1", "force": True},
    "agent.set_status": {"agent_id": "a1", "status": "away", "reason": "lunch"},
    "agent.get": {"agent_id": "a1"},
    "agent.list": {"state": "available", "queue": "default"},
    "work.submit": {
        "queue": "default",
        "work_id": "w1",
        "priority": 3,
        "skills": {"en": 1},
        "attributes": {"customer": {"tier": "gold"}, "n": [1, 2.5, None]},
    },
    "work.accept": {"work_id": "w1"},
    "work.decline": {"work_id": "w1", "reason": "busy"},
    "work.end": {"work_id": "w1"},
    "work.transfer": {"work_id": "w1", "queue": "default"},
    "work.cancel": {"work_id": "w1", "reason": "gone"},
    "work.get": {"work_id": "w1"},
    "acw.request": {"work_id": "w1"},
    "acw.extend": {"work_id": "w1"},
    "acw.complete": {
        "work_id": "w1",
        "disposition": "resolved",
        "notes": "fine",
        "fields": {"case": 12, "ok": True},
        "follow_ups": [{"title": "call back", "due_at": 1.5, "assignee": "a2"}],
    },
    "acw.force_end": {"work_id": "w1"},
    "wrapup.get": {"work_id": "w1"},
    "wrapup.list": {"since": 0, "until": 10.5, "agent_id": "a1", "limit": 5},
    "queue.list": {},
    "queue.stats": {"queue": "default"},
    "config.reload": {},
}
assert set(VALID) == set(METHODS)
HOSTILE: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    float("nan"),
    float("inf"),
    "",
    "\x00",
    "a" * 129,
    "x" * 40_000,
    "é" * 40,
    "\U0001f600" * 20,
    [],
    [[[[[[[[[[]]]]]]]]]],
    {},
    {"": None},
    {"k" * 3000: [-1]},
    list(range(2000)),
    {f"k{i}": i for i in range(100)},
    b"\x00\x01",
    msgpack.ExtType(1, b"x"),
]
HOSTILE_KEYS = ["", "k" * 3000, "\x00", "é" * 100, "work_id", "__init__", "agent_id"]
OTHER_METHODS = [*METHODS, "", "ping ", "PING", "work.", "__class__", "x" * 500]


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out += paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += paths(item, (*prefix, index))
    return out


def value_at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def replace_at(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    value = copy.copy(value)
    value[path[0]] = replace_at(value[path[0]], path[1:], new)
    return value


def valid_request(rng: random.Random) -> list[Any]:
    method = rng.choice(list(VALID))
    arguments = dict(VALID[method])
    # Ids from small pools, so valid requests reach deep into the running node (a fixed id
    # would only ever be a conflict after the first submit).
    for name, pool in (("work_id", "w"), ("agent_id", "a")):
        if name in arguments:
            arguments[name] = f"{pool}{rng.randint(1, 40)}"
    return [0, rng.randint(0, 2**32 - 1), method, [arguments] if arguments else []]


def mutated_request(rng: random.Random) -> Any:
    message: Any = valid_request(rng)
    for _ in range(rng.randint(1, 3)):
        kind = rng.random()
        if kind < 0.4:
            message = replace_at(message, rng.choice(paths(message)), rng.choice(HOSTILE))
        elif kind < 0.6:
            maps = [p for p in paths(message) if isinstance(value_at(message, p), dict)]
            maps = [p for p in maps if value_at(message, p)]
            if maps:
                path = rng.choice(maps)
                old = value_at(message, path)
                key = rng.choice(list(old))
                new = {k: v for k, v in old.items() if k != key}
                new[rng.choice(HOSTILE_KEYS)] = rng.choice([old[key], *HOSTILE])
                message = replace_at(message, path, new)
        elif kind < 0.8 and isinstance(message, list) and len(message) == 4:
            message = replace_at(message, (2,), rng.choice(OTHER_METHODS))
        else:
            message = rng.choice([[message], {"m": message}, [0, 1, "ping", message]])
    return message


def mutated_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) or 1)
        kind = rng.randrange(6)
        if kind == 0 and out:
            out[at] ^= rng.randint(1, 255)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif kind == 2 and out:
            del out[at : at + rng.randint(1, 8)]
        elif kind == 3:
            del out[at:]
        elif kind == 4:
            out[at:at] = out[at : at + rng.randint(1, 64)]
        else:
            out[at:at] = rng.choice([b"\xc1", b"\xdd\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xf0"])
    return bytes(out)


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def fuzz_input(rng: random.Random) -> tuple[str, bytes]:
    """One hostile input: its kind and its bytes."""
    r = rng.random()
    if r < 0.05:
        return "valid", pack(valid_request(rng))
    if r < 0.40:
        return "mutated_values", pack(mutated_request(rng))
    if r < 0.70:
        return "mutated_bytes", mutated_bytes(rng, pack(valid_request(rng)))
    if r < 0.80:
        return "random_bytes", rng.randbytes(rng.randint(1, 2048))
    if r < 0.90:
        return "pipeline", b"".join(
            pack(valid_request(rng) if rng.random() < 0.5 else mutated_request(rng))
            for _ in range(rng.randint(2, 50))
        )
    return "hostile_frame", rng.choice(
        [
            b"\x91" * rng.randint(33, 200_000),
            b"\x94\x00\x01\xa4ping\x91\x81\xa1x\xdc\x00\x64"  # 100 x 10,000 empty arrays
            + (b"\xdc\x27\x10" + b"\x90" * 10_000) * 100,
            b"\xdd\xff\xff\xff\xff",
            b"\x94\x00\x01\xdb\xff\xff\xff\xf0" + b"x" * 1000,
            pack([0, 1, "ping", [{"x": "y" * 1_100_000}]]),
            pack([1, 1, None, None]),
            pack([2, "event", []]),
            b"\x94\x00\x01\xa4\xff\xfe\xfd\xfc\x90",
        ]
    )


# --- 1. in-process ------------------------------------------------------------------------------


def fuzz_decoder(seconds: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    inputs = 0
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        for _ in range(100):
            kind, data = fuzz_input(rng)
            inputs += 1
            decoder = FrameDecoder()
            cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 3)))
            try:
                for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
                    decoder.feed(data[start:end])
                    while (request := decoder.next_message()) is not None:
                        try:
                            parse_request(request.method, request.params)
                            outcomes["valid"] += 1
                        except DomainError as exc:
                            outcomes[exc.code.value] += 1
                            if len(exc.message) > MAX_ERROR_CHARS:
                                failures.append(f"long error {exc.message[:80]!r}...")
            except ProtocolError as exc:
                outcomes["protocol"] += 1
                if len(exc.message) > MAX_ERROR_CHARS:
                    failures.append(f"long error {exc.message[:80]!r}...")
            except Exception as exc:
                failures.append(f"{kind}: {type(exc).__name__}: {exc} on {data[:200]!r}")
    return {
        "inputs": inputs,
        "seconds": seconds,
        "outcomes": dict(outcomes.most_common()),
        "failures": failures[:20],
        "failure_count": len(failures),
    }


# --- 2. a daemon over TCP -----------------------------------------------------------------------

CONFIG = """
[server]
host = "127.0.0.1"
port = 0
hello_timeout_s = 2.0
idle_timeout_s = 30.0
[metrics]
port = 0
[journal]
path = "{db}"
[defaults]
offer_timeout_s = 0.0
acw_mode = "manual"
[queues.default]
channel = "chat"
[queues.honest]
channel = "chat"
"""


class Daemon:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "acwd.cli", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        self.levels: Counter[str] = Counter()
        self.events: Counter[str] = Counter()
        self.errors: list[str] = []
        for line in self.proc.stderr:
            if '"acwd listening"' in line:
                self.port = int(json.loads(line)["rpc"].rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("the daemon did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                self.errors.append(line.rstrip()[:300])
                continue
            level = str(record.get("level"))
            self.levels[level] += 1
            self.events[f"{level}: {record.get('event')}"] += 1
            if level in ("error", "critical"):
                self.errors.append(line.rstrip()[:300])

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class Honest:
    """Full lifecycles on their own queue and skill, recording acknowledgements and latency."""

    def __init__(self, client: Client, tag: str) -> None:
        self.client = client
        self.tag = tag
        self.skill = f"skill-{tag}"
        self.agent = f"honest-{tag}"
        self.latencies: list[float] = []
        self.submits: list[str] = []
        self.wrapups: dict[str, str] = {}  # work_id -> the notes acknowledged
        self.n = 0

    async def call(self, method: str, **args: Any) -> Any:
        started = time.perf_counter()
        result = await self.client.call(method, **args)
        self.latencies.append(time.perf_counter() - started)
        return result

    async def login(self) -> None:
        skills = {self.skill: 1}
        await self.call("agent.login", agent_id=self.agent, queues=["honest"], skills=skills)

    async def lifecycle(self) -> None:
        self.n += 1
        work_id = f"h-{self.tag}-{self.n}"
        view = await self.call(
            "work.submit", queue="honest", work_id=work_id, skills={self.skill: 1}
        )
        self.submits.append(work_id)
        if view["agent_id"] != self.agent:
            raise AssertionError(f"{work_id} went to {view['agent_id']}")
        await self.call("work.end", work_id=work_id)
        notes = f"notes of {work_id}"
        await self.call("acw.complete", work_id=work_id, disposition="done", notes=notes)
        self.wrapups[work_id] = notes

    async def verify(self, client: Client) -> list[str]:
        """What was acknowledged and is not there now."""
        lost = []
        for work_id in self.submits:
            try:
                await client.call("work.get", work_id=work_id)
            except Exception as exc:
                lost.append(f"submit {work_id}: {exc}")
        for work_id, notes in self.wrapups.items():
            records = await client.call("wrapup.get", work_id=work_id)
            if [r["notes"] for r in records] != [notes]:
                lost.append(f"wrap-up {work_id}: {records}")
        return lost


class TcpStats:
    def __init__(self) -> None:
        self.inputs: Counter[str] = Counter()
        self.bytes = 0
        self.connections = 0
        self.resets = 0
        self.responses: Counter[str] = Counter()
        self.closed_by_server = 0


def _count_responses(unpacker: Any, stats: TcpStats) -> None:
    for message in unpacker:
        if isinstance(message, list) and len(message) == 4 and message[0] == 1:
            error = message[2]
            stats.responses["ok" if error is None else str(error.get("code"))] += 1


async def fuzz_connection(port: int, rng: random.Random, until: float, stats: TcpStats) -> None:
    while time.monotonic() < until:
        try:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        except OSError:
            await anyio.sleep(0.05)
            continue
        stats.connections += 1
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 24)
        try:
            trickle = rng.random() < 0.02
            for _ in range(rng.randint(1, 20)):
                kind, data = fuzz_input(rng)
                stats.inputs[kind] += 1
                stats.bytes += len(data)
                with anyio.fail_after(5):
                    if trickle:  # a slow sender: a few bytes at a time
                        for i in range(0, min(len(data), 40), 4):
                            await stream.send(data[i : i + 4])
                            await anyio.sleep(0.2)
                    else:
                        await stream.send(data)
            with anyio.move_on_after(0.2):
                while True:
                    unpacker.feed(await stream.receive())
                    _count_responses(unpacker, stats)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            stats.closed_by_server += 1
        except Exception:  # msgpack trouble on our side of a half-read answer
            pass
        finally:
            if rng.random() < 0.2:
                with contextlib.suppress(OSError):  # gone already
                    raw = stream.extra(SocketAttribute.raw_socket)
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    stats.resets += 1
            await stream.aclose()


async def attack(port: int, seconds: float, connections: int, seed: int) -> TcpStats:
    stats = TcpStats()
    until = time.monotonic() + seconds
    async with anyio.create_task_group() as tg:
        for i in range(connections):
            tg.start_soon(fuzz_connection, port, random.Random(seed * 7919 + i), until, stats)
    return stats


def attack_main(port: int, seconds: float, connections: int, seed: int) -> None:
    """The attackers' process: fuzz for ``seconds``, then print the counts as JSON."""
    stats = anyio.run(attack, port, seconds, connections, seed)
    print(json.dumps(vars(stats)))


async def fuzz_daemon(port: int, seconds: float, connections: int, seed: int) -> dict[str, Any]:
    # The attackers run in their own process, niced: on a real network their CPU is not the
    # daemon's, and the honest client's latency should measure the daemon, not a shared loop.
    options = ["--seconds", str(seconds), "--connections", str(connections), "--seed", str(seed)]
    attackers = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, __file__, "--attack", str(port), *options],
        stdout=subprocess.PIPE,
        text=True,
    )
    async with await Client.connect("127.0.0.1", port, client="fuzz-honest") as client:
        honest = Honest(client, f"{seed}")
        await honest.login()
        while attackers.poll() is None:
            await honest.lifecycle()
    out, _ = attackers.communicate()
    stats = TcpStats()
    for name, value in json.loads(out).items():
        setattr(stats, name, Counter(value) if isinstance(value, dict) else value)
    latencies = sorted(honest.latencies)
    return {
        "stats": stats,
        "honest": honest,
        "latency_ms": {
            "calls": len(latencies),
            "p50": round(latencies[len(latencies) // 2] * 1e3, 2),
            "p99": round(latencies[int(len(latencies) * 0.99)] * 1e3, 2),
            "max": round(latencies[-1] * 1e3, 2),
        },
    }


async def check_after(port: int, honest: Honest, tag: str) -> dict[str, Any]:
    async with await Client.connect("127.0.0.1", port, client="fuzz-check") as client:
        lost = await honest.verify(client)
        fresh = Honest(client, tag)
        await fresh.login()
        for _ in range(5):
            await fresh.lifecycle()
        lost += await fresh.verify(client)
        ping = await client.call("ping")
    return {"lost": lost, "fresh_lifecycles": fresh.n, "ping": "time" in ping}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=120.0, help="TCP phase")
    p.add_argument("--decoder-seconds", type=float, default=30.0, help="in-process phase")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fuzz.json")
    p.add_argument("--attack", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.attack:
        attack_main(args.attack, args.seconds, args.connections, args.seed)
        return 0
    started = time.time()

    print(f"in-process decoder fuzzing for {args.decoder_seconds:g} s...", file=sys.stderr)
    decoder = fuzz_decoder(args.decoder_seconds, args.seed)

    print(f"fuzzing a daemon for {args.seconds:g} s...", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "acwd.toml"
        config.write_text(CONFIG.format(db=Path(tmp) / "acwd.db"))
        daemon = Daemon(config)
        rss_start, fds_start = daemon.rss_kib(), daemon.open_fds()
        rss_samples: list[tuple[float, int]] = []  # (seconds into the run, KiB)
        sampling = threading.Event()

        def sample() -> None:
            begun = time.monotonic()
            while not sampling.wait(1.0):
                rss_samples.append((round(time.monotonic() - begun), daemon.rss_kib()))

        threading.Thread(target=sample, daemon=True).start()
        run = anyio.run(fuzz_daemon, daemon.port, args.seconds, args.connections, args.seed)
        sampling.set()
        stayed_up = daemon.proc.poll() is None
        time.sleep(1.0)  # let the last connections close
        after = anyio.run(check_after, daemon.port, run["honest"], "after") if stayed_up else {}
        rss_end, fds_end = daemon.rss_kib(), daemon.open_fds()
        exit_code = daemon.stop()
        levels, errors = dict(daemon.levels), daemon.errors
        logged = dict(daemon.events.most_common(12))
        restarted = Daemon(config)
        again = anyio.run(check_after, restarted.port, run["honest"], "restart")
        restarted.stop()

    stats: TcpStats = run["stats"]
    honest: Honest = run["honest"]
    lost = after.get("lost", ["daemon died"]) + again["lost"]
    result = {
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(time.time() - started, 1),
        "decoder": decoder,
        "daemon": {
            "seconds": args.seconds,
            "connections_in_parallel": args.connections,
            "connections_opened": stats.connections,
            "inputs": sum(stats.inputs.values()),
            "inputs_by_kind": dict(stats.inputs.most_common()),
            "bytes_sent": stats.bytes,
            "responses_by_code": dict(stats.responses.most_common()),
            "closed_by_server": stats.closed_by_server,
            "resets_by_client": stats.resets,
            "stayed_up": stayed_up,
            "clean_exit_on_sigterm": exit_code == 0,
            "log_levels": levels,
            "logged": logged,
            "error_lines": errors[:10],
            "rss_kib": {
                "start": rss_start,
                "peak": max([rss_start, *(kib for _, kib in rss_samples)]),
                "end": rss_end,
                # every tenth sample: flat once warm means bounded
                "timeline": rss_samples[:: max(1, len(rss_samples) // 12)],
            },
            "open_fds": {"start": fds_start, "end": fds_end},
        },
        "honest_client": {
            "lifecycles": honest.n,
            "acknowledged_submits": len(honest.submits),
            "acknowledged_wrapups": len(honest.wrapups),
            "latency_ms": run["latency_ms"],
            "lifecycles_after_fuzz": after.get("fresh_lifecycles", 0),
            "lifecycles_after_restart": again["fresh_lifecycles"],
        },
        "lost": lost,
        "nothing_lost": not lost,
    }
    ok = (
        stayed_up
        and exit_code == 0
        and not lost
        and decoder["failure_count"] == 0
        and levels.get("error", 0) == 0
    )
    result["passed"] = ok
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

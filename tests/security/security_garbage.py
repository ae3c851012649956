"""Hostile inputs for the abuse tests: each maker returns bytes a broken or hostile client sends."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

import anyio
import msgpack  # type: ignore[import-untyped]


def _pack(value: object) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def random_bytes(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 4096))


def never_used_byte(rng: random.Random) -> bytes:
    return _pack([0, 1, "ping", []]) + b"\xc1" * rng.randint(1, 64)


def huge_array_header(rng: random.Random) -> bytes:
    return b"\xdd\xff\xff\xff\xff" + rng.randbytes(rng.randint(0, 64))


def huge_string_header(rng: random.Random) -> bytes:
    return b"\x94\x00\x01\xdb\xff\xff\xff\xf0" + b"x" * rng.randint(0, 4096)


def deep_nesting(rng: random.Random) -> bytes:
    return b"\x91" * rng.randint(40, 100_000)


def empty_array_bomb(rng: random.Random) -> bytes:
    """Tens of thousands of empty arrays: cheap to send, ~60x bigger once decoded."""
    inner = b"\xdc" + (1000).to_bytes(2, "big") + b"\x90" * 1000
    count = rng.randint(15, 60)
    return b"\x94\x00\x01\xa4ping\x91\x81\xa1x\xdc" + count.to_bytes(2, "big") + inner * count


def oversized(rng: random.Random) -> bytes:
    return _pack([0, 7, "ping", [{"x": "y" * rng.randint(70_000, 200_000)}]])


def wrong_shapes(rng: random.Random) -> bytes:
    shapes = [
        [1, 1, None, None],
        [2, "event", []],
        [0, -1, "ping", []],
        [0, 1, 5, []],
        [0, 1, "ping", "x"],
        {"a": 1},
        [],
        "hello",
    ]
    return _pack(rng.choice(shapes))


def binary_and_extensions(rng: random.Random) -> bytes:
    values = [b"\x00\x01", msgpack.ExtType(5, b"abc"), {1: 2}]
    return _pack([0, 3, "work.get", [{"work_id": rng.choice(values)}]])


def bad_utf8(rng: random.Random) -> bytes:
    return b"\x94\x00\x01\xa4\xff\xfe\xfd\xfc\x90"


def many_pipelined_bad_requests(rng: random.Random) -> bytes:
    """Well-formed requests with bad arguments: answered one by one, the connection stays."""
    calls = [
        [0, i, rng.choice(["work.get", "agent.get", "no.such"]), [{"work_id": 5}]]
        for i in range(rng.randint(1, 300))
    ]
    return b"".join(_pack(call) for call in calls)


def truncated(rng: random.Random) -> bytes:
    """The start of a request and then nothing: the hello timeout closes it."""
    whole = _pack([0, 9, "hello", [{"client": "x" * 50}]])
    return whole[: rng.randint(1, len(whole) - 1)]


MAKERS: tuple[Callable[[random.Random], bytes], ...] = (
    random_bytes,
    never_used_byte,
    huge_array_header,
    huge_string_header,
    deep_nesting,
    empty_array_bomb,
    oversized,
    wrong_shapes,
    binary_and_extensions,
    bad_utf8,
    many_pipelined_bad_requests,
    truncated,
)


async def _garbage_client(port: int, rng: random.Random, until: float, sent: list[int]) -> None:
    """Connect, send one hostile input, wait for the server to close (or give up), repeat."""
    while time.monotonic() < until:
        data = rng.choice(MAKERS)(rng)
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                with anyio.move_on_after(0.5):
                    await stream.send(data)
                    sent[0] += 1
                    while True:
                        await stream.receive()
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream):
            pass


async def flood(port: int, seconds: float, connections: int, seed: int = 0) -> int:
    """``connections`` clients sending garbage for ``seconds``; returns the inputs sent."""
    sent = [0]
    until = time.monotonic() + seconds
    async with anyio.create_task_group() as tg:
        for i in range(connections):
            tg.start_soon(_garbage_client, port, random.Random(seed * 100_003 + i), until, sent)
    return sent[0]


if __name__ == "__main__":
    # python security_garbage.py PORT SECONDS CONNECTIONS: the flood from its own process, so
    # the attackers' CPU is not the measuring client's; prints the number of inputs sent.
    port_, seconds_, connections_ = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    print(anyio.run(flood, port_, seconds_, connections_))

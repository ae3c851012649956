"""A bare msgpack-RPC echo server: the most a Python server can do on this loop and machine.

Every request ``[0, msgid, method, params]`` is answered ``[1, msgid, nil, params]`` with no
validation, no task per request and no state: read, unpack, pack, write. ``load.py`` measures
its throughput with the same client and the same event loop as the daemon, as the limit the
daemon is compared with.

- ``--impl anyio`` (default): anyio byte streams, the IO layer acwd itself uses;
- ``--impl protocol``: a raw ``asyncio.Protocol`` (asyncio or uvloop only), the floor below that.

Prints ``{"rpc": "127.0.0.1:PORT"}`` on stderr once listening, like ``acwd serve``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

import anyio
import msgpack
from anyio.abc import SocketStream


def _answers(unpacker: msgpack.Unpacker, packer: msgpack.Packer) -> bytes:
    return b"".join(packer.pack([1, m[1], None, m[3]]) for m in unpacker)


async def _serve_connection(stream: SocketStream) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    packer = msgpack.Packer()
    async with stream:
        while True:
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            unpacker.feed(data)
            out = _answers(unpacker, packer)
            if out:
                try:
                    await stream.send(out)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return


def _announce(port: int) -> None:
    print(json.dumps({"event": "echo listening", "rpc": f"127.0.0.1:{port}"}), file=sys.stderr)
    sys.stderr.flush()


async def serve_anyio(port: int) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port)
    _announce(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(_serve_connection)


class _EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.unpacker = msgpack.Unpacker(raw=False)
        self.packer = msgpack.Packer()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.unpacker.feed(data)
        out = _answers(self.unpacker, self.packer)
        if out:
            self.transport.write(out)


async def serve_protocol(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_EchoProtocol, "127.0.0.1", port)
    _announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="bare msgpack-RPC echo server")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--loop", choices=("asyncio", "uvloop", "trio"), default="asyncio")
    p.add_argument("--impl", choices=("anyio", "protocol"), default="anyio")
    args = p.parse_args(argv)
    backend = "trio" if args.loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.loop == "uvloop" else {}
    serve = serve_protocol if args.impl == "protocol" else serve_anyio
    if serve is serve_protocol and backend == "trio":
        p.error("--impl protocol needs asyncio or uvloop")
    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, args.port, backend=backend, backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main())

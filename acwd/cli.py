"""``acwd``: run the daemon (``serve``) and check a configuration file (``check-config``)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import anyio
import structlog

from acwd import __version__
from acwd.core.config import Settings
from acwd.core.errors import ConfigError, DomainError
from acwd.logconfig import configure
from acwd.runtime.node import Node
from acwd.server import Server
from acwd.settings import describe, load_settings

LOOPS = ("asyncio", "uvloop", "trio")


async def serve(settings: Settings, config_path: str | None, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration file."""
    log = structlog.get_logger("acwd")
    node = Node(settings)
    server = Server(node, settings, config_path)
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        bound = await tg.start(server.serve, host, port)
        metrics = settings.metrics
        log.info(
            "acwd listening",
            version=__version__,
            rpc=f"{host}:{bound}",
            metrics=f"http://{metrics.host}:{metrics.port}/metrics" if metrics.port else "off",
            queues=sorted(settings.queues),
        )
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    try:
                        await server.reload()
                    except DomainError as exc:
                        log.error("reload refused", reason=exc.message)
                    continue
                log.info("shutting down", signal=signal.Signals(signum).name)
                server.stop()
                break
        with anyio.move_on_after(10):
            await server.stopped.wait()
        tg.cancel_scope.cancel()
    log.info("acwd stopped")


def _run(args: argparse.Namespace) -> int:
    configure(args.log_level, args.log_format)
    log = structlog.get_logger("acwd")
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        log.error("configuration refused", reason=str(exc))
        return 2
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    backend, opts = _backend(args.loop)
    try:
        anyio.run(serve, settings, args.config, host, port, backend=backend, backend_options=opts)
    except OSError as exc:
        log.error("cannot listen", address=f"{host}:{port}", reason=str(exc))
        return 1
    return 0


def _backend(loop: str) -> tuple[str, dict[str, Any]]:
    if loop == "uvloop":
        return "asyncio", {"use_uvloop": True}
    return loop, {}


def _check_config(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.file)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(settings))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acwd", description="The After Conversation Work daemon.")
    p.add_argument("--version", action="version", version=f"acwd {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the daemon")
    s.add_argument("--config", help="TOML configuration file (default: built-in defaults)")
    s.add_argument("--host", help="listen address (overrides [server] host)")
    s.add_argument("--port", type=int, help="listen port (overrides [server] port; 0 = any)")
    s.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop (default asyncio)")
    s.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    s.add_argument("--log-format", default="auto", choices=("auto", "json", "console"))
    s.set_defaults(func=_run)
    c = sub.add_parser("check-config", help="validate a configuration file and show what it runs")
    c.add_argument("file")
    c.set_defaults(func=_check_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

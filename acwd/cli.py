"""``acwd``: run the daemon (``serve``) and check a configuration file (``check-config``)."""

from __future__ import annotations

import argparse
import gc
import signal
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog
from prometheus_client import CollectorRegistry

from acwd import __version__
from acwd.core.config import Role, Settings
from acwd.core.errors import ConfigError, DomainError
from acwd.eventlog import EventLog
from acwd.logconfig import configure
from acwd.metrics import Metrics
from acwd.runtime.journal import JournalRefused, backup, export_wrapups
from acwd.runtime.node import Node
from acwd.security import new_token, tls_context
from acwd.server import Server
from acwd.settings import _is_loopback, describe, load_settings

LOOPS = ("asyncio", "uvloop", "trio")


async def serve(settings: Settings, config_path: str | None, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads the configuration file."""
    log = structlog.get_logger("acwd")
    node = Node(settings)
    server = Server(node, settings, config_path)
    events = EventLog()
    node.observers.append(events.observe)
    if events.debug:
        server.on_request = events.request
    metrics = Metrics(node, CollectorRegistry(), server) if settings.metrics.port else None
    if metrics is not None:
        metrics.attach()
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        # What recovery loaded lives as long as the daemon: keep the cyclic collector from
        # walking it again and again (full collections of 10,000 agents took 0.1-0.5 s).
        gc.freeze()
        bound = await tg.start(server.serve, host, port)
        exposition = "off"
        if metrics is not None:
            mhost = settings.metrics.host
            mport = await tg.start(metrics.serve, mhost, settings.metrics.port)
            exposition = f"http://{f'[{mhost}]' if ':' in mhost else mhost}:{mport}/metrics"
        log.info(
            "acwd listening",
            version=__version__,
            rpc=f"{host}:{bound}",
            metrics=exposition,
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
    if not _front_door_ok(settings, host, args.insecure, log):
        return 2
    backend, opts = _backend(args.loop)
    try:
        anyio.run(serve, settings, args.config, host, port, backend=backend, backend_options=opts)
    except OSError as exc:
        log.error("cannot listen", address=f"{host}:{port}", reason=str(exc))
        return 1
    return 0


def _front_door_ok(settings: Settings, host: str, insecure: bool, log: Any) -> bool:
    """Safe defaults: no tokens means loopback only (unless --insecure); TLS files must load."""
    if not settings.auth_tokens and not _is_loopback(host):
        if not insecure:
            log.error(
                f"refusing to listen on {host} without authentication: add [[auth.tokens]] "
                "to the configuration file (`acwd token new --role admin` makes one), listen "
                "on 127.0.0.1, or pass --insecure to let anyone who can reach it act as admin",
                host=host,
            )
            return False
        log.warning(
            f"INSECURE: listening on {host} with no [[auth.tokens]]: anyone who can reach "
            "this address has the admin role (--insecure)",
            host=host,
        )
    try:
        tls_context(settings.server)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        log.error("TLS configuration refused", reason=str(exc))
        return False
    return True


def _token_new(args: argparse.Namespace) -> int:
    try:
        made = new_token(Role(args.role), args.agent_id)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("# The token, shown this once (only its hash is kept): give it to the client.")
    print(made.token)
    print("# Add to the configuration file, then reload (SIGHUP) or restart:")
    print(made.toml, end="")
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


def _journal_path(args: argparse.Namespace) -> str:
    return args.journal or load_settings(args.config).journal.path


def _backup(args: argparse.Namespace) -> int:
    try:
        pages = backup(_journal_path(args), args.dest)
    except (ConfigError, JournalRefused, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"backed up {pages} pages to {args.dest}")
    return 0


def _export(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        print(f"\rexported {done}/{total}", end="", file=sys.stderr, flush=True)

    out = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    try:
        count = export_wrapups(
            _journal_path(args),
            out,
            args.format,
            _when(args.since),
            _when(args.until),
            progress if sys.stderr.isatty() else None,
        )
    except (ConfigError, JournalRefused, sqlite3.Error, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if out is not sys.stdout:
            out.close()
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"{count} wrap-up records", file=sys.stderr)
    return 0


def _when(text: str | None) -> float | None:
    """Unix seconds, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()


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
    s.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback host with no [[auth.tokens]] (everyone is admin)",
    )
    s.set_defaults(func=_run)
    t = sub.add_parser("token", help="make access tokens").add_subparsers(
        dest="token_command", required=True
    )
    n = t.add_parser("new", help="print a new random token and its [[auth.tokens]] lines")
    n.add_argument("--role", required=True, choices=[role.value for role in Role])
    n.add_argument("--agent-id", help="the agent an agent token acts as (role agent only)")
    n.set_defaults(func=_token_new)
    c = sub.add_parser("check-config", help="validate a configuration file and show what it runs")
    c.add_argument("file")
    c.set_defaults(func=_check_config)
    b = sub.add_parser("backup", help="copy the journal safely, even while the daemon runs")
    b.add_argument("dest", help="file to write the copy to")
    e = sub.add_parser("export", help="write wrap-up records as CSV or JSON lines")
    e.add_argument("--since", help="from this time (Unix seconds or ISO 8601), inclusive")
    e.add_argument("--until", help="up to this time (Unix seconds or ISO 8601), exclusive")
    e.add_argument("--format", choices=("csv", "jsonl"), default="jsonl")
    e.add_argument("--output", "-o", help="file to write (default: standard output)")
    for tool, func in ((b, _backup), (e, _export)):
        tool.add_argument("--config", help="configuration file naming [journal] path")
        tool.add_argument("--journal", help="journal file (overrides the configuration)")
        tool.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

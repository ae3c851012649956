"""Loading the configuration file, and the summary ``acwd check-config`` prints."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections import Counter
from dataclasses import replace

from acwd.core.config import AcwMode, Settings, WorkSettings
from acwd.core.errors import ConfigError

__all__ = ["describe", "load_settings"]

_WHERE = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_END = re.compile(r"\s*\(at end of document\)$")


def load_settings(path: str | os.PathLike[str] | None) -> Settings:
    """Read and validate a TOML file; ``None`` gives the built-in defaults."""
    if path is None:
        return Settings.from_dict({}, source="<built-in defaults>")
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise ConfigError("file", "not found", source) from None
    except OSError as err:
        raise ConfigError("file", f"cannot be read: {err.strerror or err}", source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError("file", f"is not UTF-8 text (byte {err.start})", source) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        where = _WHERE.search(message)
        if where is None:  # "(at end of document)": the last line is where it went wrong
            line, at = str(max(1, len(text.splitlines()))), "end of file"
            message = _END.sub("", message)
        else:
            line, at = where[1], f"column {where[2]}"
            message = message[: where.start()]
        raise ConfigError(f"line {line}", f"invalid TOML: {message} ({at})", source) from None
    return Settings.from_dict(data, source=source)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _acw(work: WorkSettings) -> str:
    if work.acw_mode is AcwMode.OFF:
        return "ACW off"
    if work.acw_mode is AcwMode.MANUAL:
        cap = _seconds(work.max_acw_seconds) if work.max_acw_seconds else "none"
        return f"ACW manual (cap {cap})"
    return f"ACW {work.acw_mode.value} {_seconds(work.acw_seconds)}"


def _offer(work: WorkSettings) -> str:
    if work.offer_timeout_s == 0:
        return "auto-accept"
    return f"offer timeout {_seconds(work.offer_timeout_s)}"


def describe(settings: Settings) -> str:
    """A short summary of what the daemon would run with."""
    server, metrics, journal = settings.server, settings.metrics, settings.journal
    tls = " (TLS, client certificates)" if server.tls_client_ca else " (TLS)"
    lines = [f"listen    {server.host}:{server.port}{tls if server.tls_cert else ''}"]
    if metrics.port:
        lines.append(f"metrics   http://{metrics.host}:{metrics.port}/metrics")
    else:
        lines.append("metrics   off")
    retention = f"{journal.retention_days} days" if journal.retention_days else "keep all"
    lines.append(
        f"journal   {journal.path} (synchronous {journal.synchronous}, "
        f"commit window {journal.commit_interval_ms:g} ms, retention {retention})"
    )
    tokens = settings.auth_tokens
    if tokens:
        roles = Counter(token.role.value for token in tokens)
        detail = ", ".join(f"{count} {role}" for role, count in sorted(roles.items()))
        lines.append(f"auth      on, {len(tokens)} token{'s' if len(tokens) > 1 else ''}: {detail}")
    else:
        lines.append("auth      off (no tokens)")
        if not _is_loopback(server.host):
            lines.append(
                "          warning: a non-loopback host without tokens needs --insecure to start"
            )
    width = max(map(len, [*settings.channels, *settings.queues]))
    lines.append("channels")
    for name, channel in settings.channels.items():
        work = replace(settings.defaults, **channel.overrides)
        lines.append(f"  {name:<{width}}  size {channel.size}, {_acw(work)}, {_offer(work)}")
    lines.append("queues")
    for name, queue in settings.queues.items():
        work = settings.resolve(name)
        extra = f", priority {queue.priority}" if queue.priority else ""
        if queue.overflow_after_s:
            extra += (
                f", overflow to {queue.overflow_queue} after {_seconds(queue.overflow_after_s)}"
            )
        if queue.max_wait_s:
            extra += f", max wait {_seconds(queue.max_wait_s)}"
        lines.append(
            f"  {name:<{width}}  channel {queue.channel}, policy {queue.policy.value}, "
            f"{_acw(work)}, {_offer(work)}{extra}"
        )
    agents = list(settings.agents)
    if agents:
        shown = ", ".join(agents[:10]) + (", ..." if len(agents) > 10 else "")
        lines.append(f"agents    {len(agents)} configured: {shown}")
    else:
        lines.append("agents    none configured (agents log in with their own settings)")
    return "\n".join(lines) + "\n"

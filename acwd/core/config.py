"""Typed settings: the TOML configuration, validated once and resolved per leg.

Pure: no IO, no clock, no logging. ``Settings.from_dict`` takes the parsed TOML (a plain dict),
checks every key against one table per section and raises ``ConfigError`` naming the dotted key
and a reason a person can act on. ``Settings.resolve`` answers "which ACW/offer settings apply to
this leg" with the precedence of spec/CONFIG.md, cached because the router asks on every leg.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from acwd.core.errors import ConfigError

__all__ = [
    "STATUSES",
    "SYNCHRONOUS_MODES",
    "AcwMode",
    "AcwScope",
    "AgentConfig",
    "AuthToken",
    "ChannelConfig",
    "JournalConfig",
    "LimitsConfig",
    "MetricsConfig",
    "Policy",
    "QueueConfig",
    "Role",
    "ServerConfig",
    "Settings",
    "WorkSettings",
]


class AcwMode(StrEnum):
    """How After Conversation Work starts and ends (spec/SEMANTICS.md, the ACW table)."""

    OFF = "off"
    TIMED = "timed"
    FORCED = "forced"
    MANUAL = "manual"
    ON_REQUEST = "on_request"


class AcwScope(StrEnum):
    """Whether a leg in ACW blocks the whole agent or only the capacity slot it used."""

    AGENT = "agent"
    SLOT = "slot"


class Policy(StrEnum):
    """Which routable agent a queue offers its next item to."""

    LONGEST_IDLE = "longest_idle"
    LEAST_ACTIVE = "least_active"
    SKILLS_BEST = "skills_best"


class Role(StrEnum):
    """What an authenticated connection may do."""

    AGENT = "agent"
    INTEGRATION = "integration"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


STATUSES = ("available", "away", "offline")
SYNCHRONOUS_MODES = ("normal", "full", "off")

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _no_overrides() -> Mapping[str, Any]:
    return _EMPTY


@dataclass(frozen=True, slots=True)
class WorkSettings:
    """Every ``[defaults]`` key, fully resolved for one leg (queue, channel, agent)."""

    acw_mode: AcwMode = AcwMode.TIMED
    acw_seconds: float = 90.0
    max_acw_seconds: float = 0.0
    extension_seconds: float = 30.0
    max_extensions: int = 2
    acw_scope: AcwScope = AcwScope.AGENT
    require_disposition: bool = False
    dispositions: tuple[str, ...] = ()
    timeout_disposition: str = "timeout"
    offer_timeout_s: float = 20.0
    reoffer_backoff_s: float = 10.0
    on_decline_status: str = "available"
    on_timeout_status: str = "away"
    disconnect_grace_s: float = 30.0
    sla_target_s: float = 20.0
    sla_window_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """``[channels.NAME]``: the capacity units an item uses, plus ``[defaults]`` overrides."""

    name: str
    size: int = 1
    overrides: Mapping[str, Any] = field(default_factory=_no_overrides)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """``[queues.NAME]``: routing settings, plus ``[defaults]`` overrides."""

    name: str
    channel: str = "chat"
    policy: Policy = Policy.LONGEST_IDLE
    priority: int = 0
    aging_step_s: float = 0.0
    overflow_after_s: float = 0.0
    overflow_queue: str = ""
    max_wait_s: float = 0.0
    overrides: Mapping[str, Any] = field(default_factory=_no_overrides)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """``[agents.ID]``: what the file says about one agent; ``None`` means "not set here"."""

    agent_id: str
    capacity: int | None = None
    skills: Mapping[str, int] | None = None
    queues: tuple[str, ...] | None = None
    overrides: Mapping[str, Any] = field(default_factory=_no_overrides)
    channel_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=_no_overrides)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """``[server]``: the msgpack-RPC listener."""

    host: str = "127.0.0.1"
    port: int = 7400
    max_message_bytes: int = 1048576
    max_outbound_bytes: int = 1048576
    hello_timeout_s: float = 10.0
    idle_timeout_s: float = 0.0  # 0 = no idle timeout
    max_connections: int = 1024
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """``[metrics]``: the Prometheus endpoint; port 0 disables it."""

    host: str = "127.0.0.1"
    port: int = 9400


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """``[journal]``: the SQLite journal."""

    path: str = "./var/acwd.db"
    synchronous: str = "normal"
    commit_interval_ms: float = 2.0
    retention_days: int = 0  # 0 = keep everything


@dataclass(frozen=True, slots=True)
class AuthToken:
    """One ``[[auth.tokens]]`` entry: sha256 of the token (64 lowercase hex), role, agent."""

    sha256: str
    role: Role
    agent_id: str | None = None


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """``[limits]``: what one request may contain, and how many per second (0 = unlimited)."""

    max_depth: int = 32
    max_map_keys: int = 1024
    max_array_items: int = 10000
    max_notes_bytes: int = 32768
    max_fields: int = 64
    requests_per_s: float = 0.0


# --- value checks: each takes (value, dotted key) and returns the typed value or raises -------

_Check = Callable[[Any, str], Any]
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(*, positive: bool = False) -> _Check:
    def check(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"must be a number, not {_show(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(key, f"is too large: {_show(value)}") from None
        if not math.isfinite(number):
            raise ConfigError(key, f"must be a finite number, not {_show(value)}")
        if positive and number <= 0:
            raise ConfigError(key, f"must be greater than 0, not {_show(value)}")
        if number < 0:
            raise ConfigError(key, f"must not be negative (0 or more), not {_show(value)}")
        return number

    return check


def _integer(low: int | None = None, high: int | None = None) -> _Check:
    def check(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be a whole number, not {_show(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise ConfigError(key, f"must be {bounds}, not {value}")
        return value

    return check


def _boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, not {_show(value)}")
    return value


def _text(min_len: int = 0, max_len: int | None = None) -> _Check:
    def check(value: Any, key: str) -> str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string, not {_show(value)}")
        if len(value) < min_len:
            raise ConfigError(key, "must not be empty")
        if max_len is not None and len(value) > max_len:
            raise ConfigError(key, f"must be at most {max_len} characters")
        return value

    return check


def _one_of(kind: type[StrEnum] | tuple[str, ...]) -> _Check:
    names = kind if isinstance(kind, tuple) else tuple(member.value for member in kind)

    def check(value: Any, key: str) -> Any:
        if not isinstance(value, str) or value not in names:
            raise ConfigError(key, f"must be one of {', '.join(names)}, not {_show(value)}")
        return value if isinstance(kind, tuple) else kind(value)

    return check


def _ident(value: Any, key: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ConfigError(key, f"must be {_ID_RULE}, not {_show(value)}")
    return value


def _list_of(item: _Check, *, non_empty: str = "") -> _Check:
    """A list of distinct items; ``non_empty`` is the reason given when an empty list is refused."""

    def check(value: Any, key: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise ConfigError(key, f"must be a list, not {_show(value)}")
        if non_empty and not value:
            raise ConfigError(key, non_empty)
        items = tuple(item(element, key) for element in value)
        seen: set[Any] = set()
        for element in items:
            if element in seen:
                raise ConfigError(key, f"lists {element!r} twice")
            seen.add(element)
        return items

    return check


def _skills(value: Any, key: str) -> Mapping[str, int]:
    table = _table(value, key)
    level = _integer(0)
    return MappingProxyType(
        {_ident(n, f"{key}.{n}"): level(v, f"{key}.{n}") for n, v in table.items()}
    )


def _sha256(value: Any, key: str) -> str:
    digest = value.lower() if isinstance(value, str) else value
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        # The value is not echoed: a token pasted here by mistake must not reach the logs.
        reason = "must be the 64 hex digits of sha256(token), from `printf %s TOKEN | sha256sum`"
        raise ConfigError(key, reason)
    return digest


def _table(value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(key, f"must be a table, not {_show(value)}")
    return value


def _unknown(name: str, known: Mapping[str, Any], what: str = "key") -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"unknown {what}; {hint}"


def _read(raw: Any, spec: Mapping[str, _Check], prefix: str) -> dict[str, Any]:
    """Check every key of one table against ``spec``; unknown keys are errors."""
    values: dict[str, Any] = {}
    for key, value in _table(raw, prefix).items():
        check = spec.get(key)
        if check is None:
            raise ConfigError(f"{prefix}.{key}", _unknown(key, spec))
        values[key] = check(value, f"{prefix}.{key}")
    return values


# --- the key tables: one per section; _WORK_KEYS is shared by every override level ------------

_non_negative = _number()

_WORK_KEYS: dict[str, _Check] = {
    "acw_mode": _one_of(AcwMode),
    "acw_seconds": _non_negative,
    "max_acw_seconds": _non_negative,
    "extension_seconds": _non_negative,
    "max_extensions": _integer(0),
    "acw_scope": _one_of(AcwScope),
    "require_disposition": _boolean,
    "dispositions": _list_of(_text(1, 128)),
    # timeout_disposition need not appear in a non-empty `dispositions`: it is the code the system
    # records when nobody completed the wrap-up, not one an agent may choose.
    "timeout_disposition": _text(1, 128),
    "offer_timeout_s": _non_negative,
    "reoffer_backoff_s": _non_negative,
    "on_decline_status": _one_of(STATUSES),
    "on_timeout_status": _one_of(STATUSES),
    "disconnect_grace_s": _non_negative,
    "sla_target_s": _non_negative,
    "sla_window_s": _number(positive=True),
}


def _agent_channels(value: Any, key: str) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType(
        {
            _ident(name, f"{key}.{name}"): MappingProxyType(_read(raw, _WORK_KEYS, f"{key}.{name}"))
            for name, raw in _table(value, key).items()
        }
    )


def _tokens(value: Any, key: str) -> tuple[AuthToken, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError(key, f"must be a list of tables ([[auth.tokens]]), not {_show(value)}")
    tokens: list[AuthToken] = []
    for index, raw in enumerate(value):
        prefix = f"{key}[{index}]"
        entry = _read(raw, _TOKEN_KEYS, prefix)
        for required in ("sha256", "role"):
            if required not in entry:
                raise ConfigError(f"{prefix}.{required}", "is required")
        if entry["role"] is Role.AGENT and "agent_id" not in entry:
            raise ConfigError(f"{prefix}.agent_id", "is required for role agent")
        if entry["role"] is not Role.AGENT and "agent_id" in entry:
            raise ConfigError(
                f"{prefix}.agent_id", f"only role agent takes one, not {entry['role']}"
            )
        for earlier, token in enumerate(tokens):
            if token.sha256 == entry["sha256"]:
                raise ConfigError(f"{prefix}.sha256", f"is the same token as {key}[{earlier}]")
        tokens.append(AuthToken(**entry))
    return tuple(tokens)


_SERVER_KEYS: dict[str, _Check] = {
    "host": _text(1),
    "port": _integer(0, 65535),
    "max_message_bytes": _integer(1),
    "max_outbound_bytes": _integer(1),
    "hello_timeout_s": _number(positive=True),
    "idle_timeout_s": _non_negative,
    "max_connections": _integer(1),
    "tls_cert": _text(),
    "tls_key": _text(),
    "tls_client_ca": _text(),
}
_METRICS_KEYS: dict[str, _Check] = {"host": _text(1), "port": _integer(0, 65535)}
_JOURNAL_KEYS: dict[str, _Check] = {
    "path": _text(1),
    "synchronous": _one_of(SYNCHRONOUS_MODES),
    "commit_interval_ms": _non_negative,
    "retention_days": _integer(0),
}
_LIMITS_KEYS: dict[str, _Check] = {
    "max_depth": _integer(1),
    "max_map_keys": _integer(1),
    "max_array_items": _integer(1),
    "max_notes_bytes": _integer(1),
    "max_fields": _integer(1),
    "requests_per_s": _non_negative,
}
_TOKEN_KEYS: dict[str, _Check] = {"sha256": _sha256, "role": _one_of(Role), "agent_id": _ident}
_AUTH_KEYS: dict[str, _Check] = {"tokens": _tokens}
_CHANNEL_KEYS: dict[str, _Check] = {"size": _integer(1), **_WORK_KEYS}
_QUEUE_KEYS: dict[str, _Check] = {
    "channel": _ident,
    "policy": _one_of(Policy),
    "priority": _integer(),
    "aging_step_s": _non_negative,
    "overflow_after_s": _non_negative,
    "overflow_queue": lambda value, key: _ident(value, key) if value != "" else "",
    "max_wait_s": _non_negative,
    **_WORK_KEYS,
}
_AGENT_KEYS: dict[str, _Check] = {
    "capacity": _integer(1),
    "skills": _skills,
    "queues": _list_of(_ident, non_empty="must name a queue; leave it out to serve every queue"),
    "channels": _agent_channels,
    **_WORK_KEYS,
}
_SECTIONS = (
    "server",
    "metrics",
    "journal",
    "auth",
    "defaults",
    "channels",
    "queues",
    "agents",
    "limits",
)

# Built in, as in spec/CONFIG.md. A file's [channels.X] is merged key by key over these.
_BUILTIN_CHANNELS: dict[str, dict[str, Any]] = {
    "chat": {"size": 1},
    "voice": {"acw_seconds": 30.0, "offer_timeout_s": 0.0},
}
_DEFAULT_QUEUE = "default"


def _level(
    raw: Any, spec: Mapping[str, _Check], prefix: str
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Read one override level; return (its own keys, its ``[defaults]`` overrides, read-only)."""
    values = _read(raw, spec, prefix)
    own = {k: v for k, v in values.items() if k not in _WORK_KEYS}
    return own, MappingProxyType({k: v for k, v in values.items() if k in _WORK_KEYS})


def _names(table: Mapping[str, Any]) -> str:
    return ", ".join(table)


def _plain(value: Any) -> Any:
    """Plain data (str, int, float, bool, list, dict) for views, ``to_dict`` and ``diff``."""
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in fields(value)
            if getattr(value, f.name) is not None
        }
    return value


_UNSET = object()


def _fmt(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return repr(value)


def _diff(old: Mapping[str, Any], new: Mapping[str, Any], path: str, out: list[str]) -> None:
    for key in dict.fromkeys([*old, *new]):
        where = f"{path}.{key}" if path else key
        before, after = old.get(key, _UNSET), new.get(key, _UNSET)
        if before == after:
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            _diff(before, after, where, out)
        elif before is _UNSET and isinstance(after, dict):
            out.append(f"{where}: added")
        elif after is _UNSET and isinstance(before, dict):
            out.append(f"{where}: removed")
        else:
            out.append(f"{where}: {_fmt(before)} -> {_fmt(after)}")


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration, validated. Build it with ``Settings.from_dict``."""

    server: ServerConfig
    metrics: MetricsConfig
    journal: JournalConfig
    auth_tokens: tuple[AuthToken, ...]
    defaults: WorkSettings
    channels: Mapping[str, ChannelConfig]
    queues: Mapping[str, QueueConfig]
    agents: Mapping[str, AgentConfig]
    limits: LimitsConfig
    # Filled lazily by resolve(); keyed only by known names, so it stays bounded.
    _resolved: dict[tuple[str, str, str], WorkSettings] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<config>") -> Settings:
        """Validate a parsed TOML document; every key is optional, ``{}`` gives the defaults."""
        try:
            return cls._build(data)
        except ConfigError as err:
            raise ConfigError(err.key, err.reason, source) from None

    @classmethod
    def _build(cls, data: Mapping[str, Any]) -> Settings:
        root = _table(data, "(document)")
        for name in root:
            if name not in _SECTIONS:
                raise ConfigError(name, _unknown(name, dict.fromkeys(_SECTIONS), "section"))

        def section(name: str, spec: Mapping[str, _Check]) -> dict[str, Any]:
            return _read(root.get(name, {}), spec, name)

        server = ServerConfig(**section("server", _SERVER_KEYS))
        if bool(server.tls_cert) != bool(server.tls_key):
            missing = "tls_key" if server.tls_cert else "tls_cert"
            raise ConfigError(
                f"server.{missing}", "is required: TLS needs both tls_cert and tls_key"
            )
        if server.tls_client_ca and not server.tls_cert:
            raise ConfigError(
                "server.tls_client_ca", "needs tls_cert and tls_key (client certs need TLS)"
            )
        metrics = MetricsConfig(**section("metrics", _METRICS_KEYS))
        if metrics.port and (metrics.host, metrics.port) == (server.host, server.port):
            raise ConfigError(
                "metrics.port", "is the server's port too; pick another, or 0 to disable"
            )
        journal = JournalConfig(**section("journal", _JOURNAL_KEYS))
        limits = LimitsConfig(**section("limits", _LIMITS_KEYS))
        tokens: tuple[AuthToken, ...] = section("auth", _AUTH_KEYS).get("tokens", ())
        defaults = replace(WorkSettings(), **section("defaults", _WORK_KEYS))

        declared = _table(root.get("channels", {}), "channels")
        channels: dict[str, ChannelConfig] = {}
        for name in dict.fromkeys([*_BUILTIN_CHANNELS, *declared]):
            prefix = f"channels.{name}"
            _ident(name, prefix)
            user = _table(declared.get(name, {}), prefix)
            own, work = _level({**_BUILTIN_CHANNELS.get(name, {}), **user}, _CHANNEL_KEYS, prefix)
            channels[name] = ChannelConfig(name=name, overrides=work, **own)

        # A file that declares queues gets exactly those; otherwise the built-in `default` queue.
        queues_raw = _table(root.get("queues", {}), "queues") or {_DEFAULT_QUEUE: {}}
        queues: dict[str, QueueConfig] = {}
        for name, raw in queues_raw.items():
            prefix = f"queues.{name}"
            _ident(name, prefix)
            own, work = _level(raw, _QUEUE_KEYS, prefix)
            queues[name] = QueueConfig(name=name, overrides=work, **own)
        for queue in queues.values():
            cls._check_queue(queue, channels, queues)
        for name in queues:
            cycle = cls._overflow_cycle(name, queues)
            if cycle:
                reason = f"makes an overflow cycle: {' -> '.join(cycle)}"
                raise ConfigError(f"queues.{name}.overflow_queue", reason)

        agents: dict[str, AgentConfig] = {}
        for agent_id, raw in _table(root.get("agents", {}), "agents").items():
            prefix = f"agents.{agent_id}"
            _ident(agent_id, prefix)
            own, work = _level(raw, _AGENT_KEYS, prefix)
            per_channel = own.pop("channels", _EMPTY)
            for channel in per_channel:
                if channel not in channels:
                    reason = f"no channel {channel!r} is defined; channels: {_names(channels)}"
                    raise ConfigError(f"{prefix}.channels.{channel}", reason)
            for queue_name in own.get("queues", ()):
                if queue_name not in queues:
                    reason = f"names {queue_name!r}, which is not a queue; queues: {_names(queues)}"
                    raise ConfigError(f"{prefix}.queues", reason)
            agents[agent_id] = AgentConfig(
                agent_id=agent_id, overrides=work, channel_overrides=per_channel, **own
            )

        return cls(
            server=server,
            metrics=metrics,
            journal=journal,
            auth_tokens=tokens,
            defaults=defaults,
            channels=MappingProxyType(channels),
            queues=MappingProxyType(queues),
            agents=MappingProxyType(agents),
            limits=limits,
        )

    @staticmethod
    def _check_queue(
        queue: QueueConfig, channels: Mapping[str, Any], queues: Mapping[str, QueueConfig]
    ) -> None:
        prefix = f"queues.{queue.name}"
        if queue.channel not in channels:
            reason = f"no channel {queue.channel!r} is defined; channels: {_names(channels)}"
            raise ConfigError(f"{prefix}.channel", reason)
        target = queue.overflow_queue
        if target == queue.name:
            raise ConfigError(f"{prefix}.overflow_queue", "cannot be the queue itself")
        if target and target not in queues:
            reason = f"names {target!r}, which is not a queue; queues: {_names(queues)}"
            raise ConfigError(f"{prefix}.overflow_queue", reason)
        if queue.overflow_after_s > 0 and not target:
            reason = "needs overflow_queue: name the queue to move waiting items to, or set it to 0"
            raise ConfigError(f"{prefix}.overflow_after_s", reason)

    @staticmethod
    def _overflow_cycle(start: str, queues: Mapping[str, QueueConfig]) -> list[str]:
        """The overflow chain from ``start`` back to itself, or ``[]``.

        Overflow keeps the enqueue time, so a cycle would bounce an item between queues forever.
        """
        path = [start]
        current = queues[start]
        while current.overflow_after_s > 0:
            target = current.overflow_queue
            if target == start:
                return [*path, start]
            if target in path:  # a cycle not through start: reported from one of its queues
                return []
            path.append(target)
            current = queues[target]
        return []

    def resolve(
        self, queue: str, channel: str | None = None, agent_id: str | None = None
    ) -> WorkSettings:
        """A leg's settings; first set wins: agent+channel > agent > queue > channel > defaults.

        ``channel`` defaults to the queue's; an unknown channel or agent contributes nothing.
        Raises ``KeyError`` for an unknown queue.
        """
        spec = self.queues[queue]
        chan = self.channels.get(spec.channel if channel is None else channel)
        agent = self.agents.get(agent_id) if agent_id is not None else None
        key = (queue, chan.name if chan else "", agent.agent_id if agent else "")
        found = self._resolved.get(key)
        if found is None:
            merged: dict[str, Any] = {}
            if chan is not None:
                merged.update(chan.overrides)
            merged.update(spec.overrides)
            if agent is not None:
                merged.update(agent.overrides)
                if chan is not None:
                    merged.update(agent.channel_overrides.get(chan.name, _EMPTY))
            found = self._resolved[key] = replace(self.defaults, **merged)
        return found

    def channel_of(self, queue: str) -> str:
        """The channel a queue's items belong to (``KeyError`` for an unknown queue)."""
        return self.queues[queue].channel

    def size_of(self, channel: str) -> int:
        """The capacity units one item of ``channel`` uses; 1 for a channel not configured."""
        chan = self.channels.get(channel)
        return chan.size if chan is not None else 1

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data, in the file's shape: ``from_dict(s.to_dict()) == s``."""
        return {
            "server": _plain(self.server),
            "metrics": _plain(self.metrics),
            "journal": _plain(self.journal),
            "auth": {"tokens": _plain(self.auth_tokens)},
            "defaults": _plain(self.defaults),
            "channels": {
                n: {"size": c.size, **_plain(c.overrides)} for n, c in self.channels.items()
            },
            "queues": {n: self._queue_dict(q) for n, q in self.queues.items()},
            "agents": {n: self._agent_dict(a) for n, a in self.agents.items()},
            "limits": _plain(self.limits),
        }

    @staticmethod
    def _queue_dict(queue: QueueConfig) -> dict[str, Any]:
        own = {k: v for k, v in _plain(queue).items() if k not in ("name", "overrides")}
        return {**own, **_plain(queue.overrides)}

    @staticmethod
    def _agent_dict(agent: AgentConfig) -> dict[str, Any]:
        skip = ("agent_id", "overrides", "channel_overrides")
        out = {k: v for k, v in _plain(agent).items() if k not in skip}
        out.update(_plain(agent.overrides))
        if agent.channel_overrides:
            out["channels"] = _plain(agent.channel_overrides)
        return out

    def _effective(self) -> dict[str, Any]:
        """``to_dict`` with channels and queues shown as they resolve, and tokens by hash prefix."""
        view = self.to_dict()
        view["auth"] = {
            "tokens": {
                t.sha256[:12]: {"role": t.role.value, "agent_id": t.agent_id or ""}
                for t in self.auth_tokens
            }
        }
        view["channels"] = {
            n: {"size": c.size, **_plain(replace(self.defaults, **c.overrides))}
            for n, c in self.channels.items()
        }
        for name, queue in view["queues"].items():
            queue.update(_plain(self.resolve(name)))
        return view

    def diff(self, other: Settings) -> list[str]:
        """Human lines for what changes from ``self`` (old) to ``other`` (new).

        Channels and queues are compared as they resolve, so a changed ``[defaults]`` key also
        shows on every channel and queue it reaches; agents are compared as written.
        """
        lines: list[str] = []
        _diff(self._effective(), other._effective(), "", lines)
        return lines

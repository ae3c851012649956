"""Typed, validated arguments of every protocol v1 method (PROTOCOL.md), and who may call it.

Each method's arguments are a frozen dataclass; the dataclass fields are the argument names and
their defaults. Validation is table-driven: an argument name means the same thing in every method,
so one rule per name (`ARGUMENT_RULES`) checks and converts it. An optional argument sent as nil
takes its default. `parse_request` assumes nothing about its input beyond ``params`` being a list,
but relies on `acwd.protocol.framing` for what it already refuses everywhere in a message
(binary, extension types, non-string map keys, nesting).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from acwd.core.errors import DomainError, ErrorCode
from acwd.protocol.framing import wire_kind


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on free-form wrap-up data (SEMANTICS.md, "Wrap-up record")."""

    max_notes_bytes: int = 32 * 1024
    max_field_keys: int = 64


DEFAULT_LIMITS: Final = Limits()

STATUSES: Final = ("available", "away", "offline")
AGENT_STATES: Final = ("offline", "away", "available", "busy", "acw")
TOPICS: Final = ("agent", "work", "acw", "queue")
MAX_NAME_CHARS: Final = 128
MAX_LIMIT: Final = 2**31 - 1
_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


# --- Arguments of each method -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A follow-up task recorded with a wrap-up."""

    title: str
    due_at: float | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class Hello:
    token: str | None = dataclasses.field(default=None, repr=False)  # a secret: never shown
    client: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Subscribe:
    topics: tuple[str, ...]
    queue: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AgentLogin:
    """capacity, skills and queues are None when not given: the config file fills them in."""

    agent_id: str
    status: str = "available"
    reason: str | None = None
    capacity: int | None = None
    skills: dict[str, int] | None = None
    queues: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class AgentLogout:
    agent_id: str
    force: bool = False


@dataclass(frozen=True, slots=True)
class AgentSetStatus:
    agent_id: str
    status: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class AgentGet:
    agent_id: str


@dataclass(frozen=True, slots=True)
class AgentList:
    state: str | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class WorkSubmit:
    """channel and size are None when not given: the queue's channel supplies them."""

    queue: str
    work_id: str | None = None
    channel: str | None = None
    priority: int = 0
    skills: dict[str, int] | None = None
    size: int | None = None
    attributes: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class WorkAccept:
    work_id: str


@dataclass(frozen=True, slots=True)
class WorkDecline:
    work_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WorkEnd:
    work_id: str


@dataclass(frozen=True, slots=True)
class WorkTransfer:
    work_id: str
    queue: str


@dataclass(frozen=True, slots=True)
class WorkCancel:
    work_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class WorkGet:
    work_id: str


@dataclass(frozen=True, slots=True)
class AcwRequest:
    work_id: str


@dataclass(frozen=True, slots=True)
class AcwExtend:
    work_id: str


@dataclass(frozen=True, slots=True)
class AcwComplete:
    work_id: str
    disposition: str | None = None
    notes: str | None = None
    fields: dict[str, Any] | None = None
    follow_ups: tuple[FollowUp, ...] | None = None


@dataclass(frozen=True, slots=True)
class AcwForceEnd:
    work_id: str


@dataclass(frozen=True, slots=True)
class WrapupGet:
    work_id: str


@dataclass(frozen=True, slots=True)
class WrapupList:
    since: float | None = None
    until: float | None = None
    agent_id: str | None = None
    queue: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class QueueList:
    pass


@dataclass(frozen=True, slots=True)
class QueueStats:
    queue: str


@dataclass(frozen=True, slots=True)
class ConfigReload:
    pass


Args: TypeAlias = (
    Hello
    | Ping
    | Subscribe
    | Unsubscribe
    | AgentLogin
    | AgentLogout
    | AgentSetStatus
    | AgentGet
    | AgentList
    | WorkSubmit
    | WorkAccept
    | WorkDecline
    | WorkEnd
    | WorkTransfer
    | WorkCancel
    | WorkGet
    | AcwRequest
    | AcwExtend
    | AcwComplete
    | AcwForceEnd
    | WrapupGet
    | WrapupList
    | QueueList
    | QueueStats
    | ConfigReload
)


# --- Methods and roles --------------------------------------------------------------------------

AGENT: Final = "agent"
INTEGRATION: Final = "integration"
SUPERVISOR: Final = "supervisor"
ADMIN: Final = "admin"
ROLES: Final = frozenset({AGENT, INTEGRATION, SUPERVISOR, ADMIN})


@dataclass(frozen=True, slots=True)
class MethodSpec:
    """A method: its arguments class, the roles that may call it, and its agent scoping.

    ``agent_scoped``: a caller with the agent role may only act on its own agent. The server
    checks `scope_argument`: for ``agent_id`` the argument must be the caller's agent_id (or
    absent, meaning its own, for subscribe); for ``work_id`` the work item must have a leg of the
    caller's agent (for work.accept / work.decline: be offered to it).
    """

    name: str
    args: type[Args]
    roles: frozenset[str]
    agent_scoped: bool

    @property
    def scope_argument(self) -> str | None:
        """The argument by which an agent-scoped call names its agent: agent_id or work_id."""
        if not self.agent_scoped:
            return None
        return "agent_id" if "agent_id" in self.argument_names else "work_id"

    @property
    def argument_names(self) -> tuple[str, ...]:
        """The method's argument names, in declaration order."""
        return tuple(name for name, _ in _ARGUMENTS[self.name])


Y, N = True, False
# PROTOCOL.md "Roles": agent acts on its own agent only; integration submits, cancels and transfers
# work and reads; supervisor reads everything, forces status and ends ACW; admin does everything.
# fmt: off
_ROLE_TABLE: Final[tuple[tuple[str, type[Args], bool, bool, bool, bool, bool], ...]] = (
    # method             arguments       agent integration supervisor admin agent_scoped
    ("hello",            Hello,          Y,    Y,          Y,         Y,    N),
    ("ping",             Ping,           Y,    Y,          Y,         Y,    N),
    ("subscribe",        Subscribe,      Y,    Y,          Y,         Y,    Y),
    ("unsubscribe",      Unsubscribe,    Y,    Y,          Y,         Y,    N),
    ("agent.login",      AgentLogin,     Y,    N,          N,         Y,    Y),
    ("agent.logout",     AgentLogout,    Y,    N,          Y,         Y,    Y),
    ("agent.set_status", AgentSetStatus, Y,    N,          Y,         Y,    Y),
    ("agent.get",        AgentGet,       Y,    Y,          Y,         Y,    Y),
    ("agent.list",       AgentList,      N,    Y,          Y,         Y,    N),
    ("work.submit",      WorkSubmit,     N,    Y,          N,         Y,    N),
    ("work.accept",      WorkAccept,     Y,    N,          N,         Y,    Y),
    ("work.decline",     WorkDecline,    Y,    N,          N,         Y,    Y),
    ("work.end",         WorkEnd,        Y,    N,          N,         Y,    Y),
    ("work.transfer",    WorkTransfer,   Y,    Y,          N,         Y,    Y),
    ("work.cancel",      WorkCancel,     N,    Y,          N,         Y,    N),
    ("work.get",         WorkGet,        Y,    Y,          Y,         Y,    Y),
    ("acw.request",      AcwRequest,     Y,    N,          N,         Y,    Y),
    ("acw.extend",       AcwExtend,      Y,    N,          N,         Y,    Y),
    ("acw.complete",     AcwComplete,    Y,    N,          N,         Y,    Y),
    ("acw.force_end",    AcwForceEnd,    N,    N,          Y,         Y,    N),
    ("wrapup.get",       WrapupGet,      Y,    Y,          Y,         Y,    Y),
    ("wrapup.list",      WrapupList,     N,    Y,          Y,         Y,    N),
    ("queue.list",       QueueList,      Y,    Y,          Y,         Y,    N),
    ("queue.stats",      QueueStats,     N,    Y,          Y,         Y,    N),
    ("config.reload",    ConfigReload,   N,    N,          N,         Y,    N),
)
# fmt: on

METHODS: Final[dict[str, MethodSpec]] = {
    name: MethodSpec(
        name,
        args,
        frozenset(
            role
            for role, allowed in zip((AGENT, INTEGRATION, SUPERVISOR, ADMIN), flags, strict=True)
            if allowed
        ),
        scoped,
    )
    for name, args, *flags, scoped in _ROLE_TABLE
}
# (name, required) for each argument of each method, in declaration order.
_ARGUMENTS: Final[dict[str, tuple[tuple[str, bool], ...]]] = {
    spec.name: tuple(
        (f.name, f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        for f in dataclasses.fields(spec.args)
    )
    for spec in METHODS.values()
}


# --- Argument rules -----------------------------------------------------------------------------


class _Invalid(Exception):
    """A problem with one argument's value; parse_request prefixes the argument's name."""


Rule: TypeAlias = Callable[[Any, Limits], Any]


def _show(value: object) -> str:
    """A short rendering of a scalar that was refused."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return wire_kind(value)


def _string(value: Any, _: Limits) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {wire_kind(value)}")
    return value


def _name(value: Any, limits: Limits) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS):
        got = f"{len(value)} characters" if isinstance(value, str) else wire_kind(value)
        raise _Invalid(f"must be a string of 1 to {MAX_NAME_CHARS} characters, got {got}")
    return value


def _id(value: Any, _: Limits) -> str:
    if not (isinstance(value, str) and _ID.fullmatch(value)):
        raise _Invalid(
            f"must be 1 to 128 characters from A-Z a-z 0-9 . _ : @ -, got {_show(value)}"
        )
    return value


def _one_of(*choices: str) -> Rule:
    def rule(value: Any, _: Limits) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}; got {_show(value)}")
        return value

    return rule


def _boolean(value: Any, _: Limits) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be a boolean, got {wire_kind(value)}")
    return value


def _integer(value: Any, _: Limits) -> int:
    if type(value) is not int:  # bool is an int subclass but not an integer on the wire
        raise _Invalid(f"must be an integer, got {wire_kind(value)}")
    return value


def _positive_integer(value: Any, _: Limits) -> int:
    if type(value) is not int or value <= 0:
        raise _Invalid(f"must be a positive integer, got {_show(value)}")
    return value


def _limit(value: Any, limits: Limits) -> int:
    count = _positive_integer(value, limits)
    if count > MAX_LIMIT:  # it becomes an SQL parameter: a 64-bit integer at most
        raise _Invalid(f"must be at most {MAX_LIMIT}, got {_show(value)}")
    return count


def _number(value: Any, _: Limits) -> float:
    if type(value) not in (int, float):
        raise _Invalid(f"must be a number of Unix seconds, got {wire_kind(value)}")
    if not math.isfinite(value):
        raise _Invalid(f"must be a finite number, got {value}")
    return float(value)


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Invalid(f"must be a map of {what}, got {wire_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise _Invalid(f"keys must be strings, got {wire_kind(key)}")
    return value


def _levels(value: Any, _: Limits) -> dict[str, int]:
    levels = _map(value, "skill name to level")
    for skill, level in levels.items():
        if not skill:
            raise _Invalid("skill names must not be empty")
        if type(level) is not int or level < 0:
            raise _Invalid(f"level of {skill[:40]!r} must be an integer >= 0, got {_show(level)}")
    return dict(levels)


def _array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Invalid(f"must be an array of {what}, got {wire_kind(value)}")
    return value


def _names(value: Any, limits: Limits) -> tuple[str, ...]:
    items = _array(value, "queue names")
    for index, item in enumerate(items):
        try:
            _name(item, limits)
        except _Invalid as exc:
            raise _Invalid(f"item {index} {exc}") from None
    return tuple(items)


def _topics(value: Any, _: Limits) -> tuple[str, ...]:
    items = _array(value, "topics")
    if not items:
        raise _Invalid(f"must name at least one of {', '.join(TOPICS)}")
    for item in items:
        if not isinstance(item, str) or item not in TOPICS:
            raise _Invalid(f"unknown topic {_show(item)}; topics are {', '.join(TOPICS)}")
    return tuple(dict.fromkeys(items))  # de-duplicated, in the order given


def _notes(value: Any, limits: Limits) -> str:
    notes = _string(value, limits)
    # A str of n characters is at most 4n bytes of UTF-8: skip encoding when that already fits.
    if len(notes) * 4 > limits.max_notes_bytes:
        size = len(notes.encode("utf-8", "surrogatepass"))
        if size > limits.max_notes_bytes:
            raise _Invalid(f"is {size} bytes of UTF-8; at most {limits.max_notes_bytes} allowed")
    return notes


def _fields(value: Any, limits: Limits) -> dict[str, Any]:
    fields = _map(value, "field name to scalar")
    if len(fields) > limits.max_field_keys:
        raise _Invalid(f"has {len(fields)} keys; at most {limits.max_field_keys} allowed")
    for key, item in fields.items():
        if not (item is None or isinstance(item, bool | int | float | str)):
            raise _Invalid(
                f"value of {key[:40]!r} must be nil, boolean, integer, float or string, "
                f"got {wire_kind(item)}"
            )
    _finite(fields)
    return dict(fields)


_FOLLOW_UP_RULES: Final[dict[str, Rule]] = {
    "title": _string,
    "due_at": _number,
    "assignee": _string,
}


def _follow_ups(value: Any, limits: Limits) -> tuple[FollowUp, ...]:
    follow_ups = []
    for index, item in enumerate(_array(value, "maps {title, due_at?, assignee?}")):
        try:
            parts = _map(item, "title, due_at?, assignee?")
            for key in parts:
                if key not in _FOLLOW_UP_RULES:
                    raise _Invalid(
                        f"unknown key {key[:40]!r}; a follow-up has title, due_at, assignee"
                    )
            if parts.get("title") is None:
                raise _Invalid("title is missing")
            checked: dict[str, Any] = {}
            for key, part in parts.items():
                if part is not None:
                    try:
                        checked[key] = _FOLLOW_UP_RULES[key](part, limits)
                    except _Invalid as exc:
                        raise _Invalid(f"{key} {exc}") from None
        except _Invalid as exc:
            raise _Invalid(f"item {index}: {exc}") from None
        follow_ups.append(FollowUp(**checked))
    return tuple(follow_ups)


def _attributes(value: Any, _: Limits) -> dict[str, Any]:
    attributes = _map(value, "string keys to values")
    _finite(attributes)
    return dict(attributes)


def _finite(value: dict[str, Any]) -> None:
    """Refuse NaN and infinities anywhere inside: the journal stores JSON, which has neither."""
    stack: list[Any] = [value]
    while stack:  # iterative: the framing already bounds the depth
        items = stack.pop()
        for item in items.values() if isinstance(items, dict) else items:
            if isinstance(item, float) and not math.isfinite(item):
                raise _Invalid(f"must not hold {item} (numbers must be finite)")
            if isinstance(item, dict | list):
                stack.append(item)


# One rule per argument name, the same in every method.
ARGUMENT_RULES: Final[dict[str, Rule]] = {
    "token": _string,
    "client": _string,
    "topics": _topics,
    "queue": _name,
    "channel": _name,
    "agent_id": _id,
    "work_id": _id,
    "status": _one_of(*STATUSES),
    "state": _one_of(*AGENT_STATES),
    "reason": _string,
    "capacity": _positive_integer,
    "size": _positive_integer,
    "limit": _limit,
    "priority": _integer,
    "force": _boolean,
    "skills": _levels,
    "queues": _names,
    "attributes": _attributes,
    "disposition": _string,
    "notes": _notes,
    "fields": _fields,
    "follow_ups": _follow_ups,
    "since": _number,
    "until": _number,
}


def _invalid(argument: str, problem: str) -> DomainError:
    return DomainError(ErrorCode.INVALID_PARAMS, f"{argument}: {problem}", {"argument": argument})


def parse_request(
    method: str, params: list[Any], limits: Limits = DEFAULT_LIMITS
) -> tuple[MethodSpec, Args]:
    """Look up ``method`` and validate ``params`` (``[]`` or ``[{named arguments}]``).

    Raises DomainError ``method_not_found`` or ``invalid_params`` (message
    ``"<argument>: <problem>"``, data ``{"argument": name}``).
    """
    spec = METHODS.get(method)
    if spec is None:
        raise DomainError(
            ErrorCode.METHOD_NOT_FOUND,
            f"There is no method {method[:80]!r} in protocol v1.",
            {"method": method[:80]},
        )
    if params == []:
        given: dict[Any, Any] = {}
    elif len(params) == 1 and isinstance(params[0], dict):
        given = params[0]
    else:
        raise _invalid("params", "must be [] or [{named arguments}]")
    arguments = _ARGUMENTS[method]
    names = spec.argument_names
    for key in given:
        if not isinstance(key, str):
            raise _invalid("params", f"argument names must be strings, got {wire_kind(key)}")
        if key not in names:
            takes = ", ".join(names) if names else "no arguments"
            raise _invalid(key[:80], f"unknown argument of {method}, which takes {takes}")
    values: dict[str, Any] = {}
    for name, required in arguments:
        value = given.get(name)
        if value is None:
            if required:
                raise _invalid(name, "is required")
            continue
        try:
            values[name] = ARGUMENT_RULES[name](value, limits)
        except _Invalid as exc:
            raise _invalid(name, str(exc)) from None
    return spec, spec.args(**values)

"""The front door's parts, kept out of the server's IO code: TLS, tokens, throttles.

- `tls_context`: the server's `ssl.SSLContext` from ``[server] tls_*`` (client certificates
  required when ``tls_client_ca`` is set).
- `new_token`: a random token and the ``[[auth.tokens]]`` lines that admit it.
- `HelloThrottle`: repeated failed hellos from one address are answered ever more slowly, one at
  a time, in bounded memory.
- `RequestBucket`: the per-connection request rate (a token bucket).
- `is_disconnect`: whether an exception (or exception group) only says the peer went away.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
import ssl
from dataclasses import dataclass
from typing import Final

import anyio

from acwd.core.config import Role, ServerConfig
from acwd.core.errors import DomainError, ErrorCode

__all__ = [
    "HelloThrottle",
    "RequestBucket",
    "is_disconnect",
    "new_token",
    "tls_context",
]


def tls_context(config: ServerConfig) -> ssl.SSLContext | None:
    """The server side of TLS, or None when ``tls_cert`` is not set.

    Raises `ValueError` for an incomplete configuration and `OSError` / `ssl.SSLError` for files
    that cannot be read or used.
    """
    if not config.tls_cert:
        if config.tls_key or config.tls_client_ca:
            raise ValueError("[server] tls_key and tls_client_ca need tls_cert as well")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key or None)
    if config.tls_client_ca:
        context.load_verify_locations(cafile=config.tls_client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


_AGENT_ID: Final = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


@dataclass(frozen=True, slots=True)
class NewToken:
    """A freshly made token: show ``token`` once, store only ``toml`` (its hash)."""

    token: str
    sha256: str
    toml: str


def new_token(role: Role, agent_id: str | None = None) -> NewToken:
    """A random 256-bit token for ``role`` (``agent`` needs ``agent_id``, the others refuse it)."""
    if (role is Role.AGENT) != (agent_id is not None):
        raise ValueError(
            "role agent needs an agent_id (--agent-id)"
            if role is Role.AGENT
            else f"only role agent takes an agent_id, not {role.value}"
        )
    if agent_id is not None and not _AGENT_ID.fullmatch(agent_id):
        raise ValueError(
            f"agent_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -, not {agent_id!r}"
        )
    token = secrets.token_urlsafe(32)
    digest = hashlib.sha256(token.encode()).hexdigest()
    lines = ["[[auth.tokens]]", f'sha256 = "{digest}"', f'role = "{role.value}"']
    if agent_id is not None:
        lines.append(f'agent_id = "{agent_id}"')
    return NewToken(token, digest, "\n".join(lines) + "\n")


def address_key(host: str) -> str:
    """What failures are counted by: the IPv4 address, or the IPv6 /64 (one site's block)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


@dataclass(slots=True)
class _Strikes:
    count: int  # failed hellos since the record was last forgotten
    last: float  # when the last one failed
    next_at: float  # the earliest time the next hello from here is checked


class HelloThrottle:
    """Slows down guessing: after failed hellos, an address's hellos are checked one at a time,
    spaced ``base_s * 2 ** (failures - 1)`` apart (at most ``max_delay_s``).

    Every hello from a throttled address waits, the right ones too, so the answer's timing says
    nothing and opening more connections does not help. A hello that would wait longer than
    ``max_wait_s`` is answered ``overloaded`` at once. An address is forgotten ``forget_s`` after
    its last failure; at most ``max_addresses`` are remembered (the oldest go first), so memory
    stays bounded whatever the number of addresses.
    """

    def __init__(
        self,
        base_s: float = 0.1,
        max_delay_s: float = 5.0,
        max_wait_s: float = 5.0,
        forget_s: float = 300.0,
        max_addresses: int = 4096,
    ) -> None:
        self.base_s = base_s
        self.max_delay_s = max_delay_s
        self.max_wait_s = max_wait_s
        self.forget_s = forget_s
        self.max_addresses = max_addresses
        self._strikes: dict[str, _Strikes] = {}  # insertion order = oldest failure first

    def __len__(self) -> int:
        return len(self._strikes)

    def failures(self, host: str) -> int:
        """Failed hellos remembered for ``host``."""
        strikes = self._current(address_key(host), anyio.current_time())
        return strikes.count if strikes else 0

    def delay(self, count: int) -> float:
        """The spacing between checks after ``count`` failures."""
        if count <= 0:
            return 0.0
        return min(self.max_delay_s, self.base_s * 2.0 ** min(count - 1, 60))

    async def admit(self, host: str) -> None:
        """Wait for this address's turn to have a token checked (at once if it never failed)."""
        now = anyio.current_time()
        strikes = self._current(address_key(host), now)
        if strikes is None:
            return
        turn = max(now, strikes.next_at)
        if turn - now > self.max_wait_s:
            retry = round(turn - now, 1)
            raise DomainError(
                ErrorCode.OVERLOADED,
                f"Too many failed hellos from this address; try again in {retry:g} s.",
                {"retry_after_s": retry},
            )
        strikes.next_at = turn + self.delay(strikes.count)
        if turn > now:
            await anyio.sleep(turn - now)

    def failed(self, host: str) -> int:
        """Count a failed hello; returns how many this address has now."""
        key, now = address_key(host), anyio.current_time()
        strikes = self._current(key, now)
        if strikes is None:
            strikes = _Strikes(0, now, now)
        else:
            del self._strikes[key]  # re-inserted last: the dict stays ordered by last failure
        strikes.count += 1
        strikes.last = now
        strikes.next_at = max(strikes.next_at, now + self.delay(strikes.count))
        self._strikes[key] = strikes
        while len(self._strikes) > self.max_addresses:
            del self._strikes[next(iter(self._strikes))]
        return strikes.count

    def _current(self, key: str, now: float) -> _Strikes | None:
        strikes = self._strikes.get(key)
        if strikes is not None and now - strikes.last > self.forget_s:
            del self._strikes[key]
            return None
        return strikes


class RequestBucket:
    """A token bucket: ``rate`` requests per second, bursts of up to one second's worth."""

    __slots__ = ("_allowance", "_checked", "capacity", "rate")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._allowance = self.capacity
        self._checked = anyio.current_time()

    def take(self) -> bool:
        """Use one request's worth; False when the bucket is empty (the request is refused)."""
        now = anyio.current_time()
        self._allowance = min(self.capacity, self._allowance + (now - self._checked) * self.rate)
        self._checked = now
        if self._allowance < 1.0:
            return False
        self._allowance -= 1.0
        return True


_DISCONNECTS: Final = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    OSError,  # includes ssl.SSLError, ConnectionResetError and TimeoutError
)


def is_disconnect(exc: BaseException) -> bool:
    """True when ``exc`` (every leaf of it, for a group) only says the connection broke."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_disconnect(inner) for inner in exc.exceptions)
    return isinstance(exc, _DISCONNECTS)

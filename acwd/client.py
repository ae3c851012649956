"""An async acwd client (anyio: runs on asyncio and trio).

Use it as::

    async with await Client.connect("127.0.0.1", 7400, token=...) as acwd:
        view = await acwd.agent_login("alice")
        async for event in acwd.events():
            ...

``connect`` returns a ready `Client` (it has sent ``hello``); ``aclose`` (or leaving the
``async with``) closes it. Calls may run concurrently from many tasks over the one connection:
each carries its own msgid and the responses are matched as they arrive, in any order.

There is no background task, so a `Client` needs no task group and may be closed in any order
from any task (a trio nursery would otherwise have to outlive it). Instead, whichever task is
waiting (a call or ``events()``) reads the connection for everybody: it hands each response to
its caller and each event to the buffer, and passes the reading on when its own answer is in.
Events that arrive while nobody waits stay in the socket until the next call or ``events()``.
"""

from __future__ import annotations

import itertools
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import anyio
import anyio.abc
import msgpack  # type: ignore[import-untyped]

from acwd import __version__
from acwd.protocol.framing import MAX_MSGID, NOTIFICATION, RESPONSE, encode_request

__all__ = ["Client", "ConnectionLost", "RpcError"]

DEFAULT_PORT: Final = 7400
EVENT_BUFFER: Final = 4096
_READ_SIZE: Final = 65_536


class RpcError(Exception):
    """The server refused a request: ``code`` is one of PROTOCOL.md's error codes."""

    def __init__(self, code: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data: Mapping[str, Any] = data or {}


class ConnectionLost(ConnectionError):
    """The connection is gone (closed by either side, or broken); its pending calls fail."""


class _Waiter:
    """A task waiting for a response (``msgid``) or, with ``msgid`` None, for an event."""

    __slots__ = ("done", "error", "msgid", "result", "wake")

    def __init__(self, msgid: int | None) -> None:
        self.msgid = msgid
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.wake = anyio.Event()

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.done, self.result, self.error = True, result, error
        self.wake.set()


def _args(**arguments: Any) -> dict[str, Any]:
    """Named arguments as sent: the ones left as None are omitted."""
    return {name: value for name, value in arguments.items() if value is not None}


class Client:
    """One msgpack-RPC connection to acwd; see the module docstring for the reading scheme."""

    def __init__(self, stream: anyio.abc.ByteStream, *, event_buffer: int = EVENT_BUFFER) -> None:
        self._stream = stream
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self._ids = itertools.count(1)  # msgid 0 is what the server uses when it cannot tell
        self._calls: dict[int, _Waiter] = {}
        self._waiters: set[_Waiter] = set()
        self._reading = False
        self._send_lock = anyio.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=event_buffer)
        self.events_dropped = 0  # events pushed out of the full buffer, oldest first
        self._lost: ConnectionLost | None = None
        self._closed_by_us = False
        self._server_error: RpcError | None = None  # a protocol error that came with msgid 0
        self.server_info: dict[str, Any] = {}

    # -- life ------------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        tls: ssl.SSLContext | bool | None = None,
        client: str | None = None,
        event_buffer: int = EVENT_BUFFER,
    ) -> Client:
        """Open a connection and say ``hello`` (with ``token`` when given).

        ``tls``: an `ssl.SSLContext`, or True for the system's default verification.
        Raises `OSError` when the server cannot be reached and `RpcError` when hello is refused.
        """
        stream: anyio.abc.ByteStream
        if tls:
            context = tls if isinstance(tls, ssl.SSLContext) else ssl.create_default_context()
            stream = await anyio.connect_tcp(
                host, port, ssl_context=context, tls_standard_compatible=False
            )
        else:
            stream = await anyio.connect_tcp(host, port)
        self = cls(stream, event_buffer=event_buffer)
        try:
            self.server_info = await self.hello(
                token=token, client=client or f"acwd.client/{__version__}"
            )
        except BaseException:
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """Close the connection; calls still waiting raise `ConnectionLost`."""
        if self._lost is None:
            self._closed_by_us = True
            self._fail(ConnectionLost("The connection was closed by this client."))
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._lost is not None

    # -- calls -----------------------------------------------------------------------------------

    async def call(self, method: str, **arguments: Any) -> Any:
        """Call ``method`` with named arguments (sent as given, None as nil); return its result.

        Raises `RpcError` for an error response and `ConnectionLost` when the connection goes.
        """
        if self._lost is not None:
            raise self._lost
        msgid = self._next_msgid()
        waiter = _Waiter(msgid)
        self._calls[msgid] = waiter
        try:
            data = encode_request(msgid, method, [arguments] if arguments else [])
            await self._send(data)
            await self._wait(waiter)
        finally:
            self._calls.pop(msgid, None)
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def _send(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                broke = f"The connection broke ({_describe(exc)})."
                self._fail(ConnectionLost(self._close_reason(broke)))
            except BaseException:
                # Cancelled while blocked on a server that is not reading: the request may be
                # half-written, which would corrupt the stream for every caller, so it must go.
                self._fail(ConnectionLost("A request was cancelled while being sent."))
                with anyio.CancelScope(shield=True):
                    await self._stream.aclose()
                raise

    def _next_msgid(self) -> int:
        while True:
            msgid = next(self._ids)
            if msgid > MAX_MSGID:
                self._ids = itertools.count(1)
                continue
            if msgid not in self._calls:
                return msgid

    # -- events ----------------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The server's events (``[2, "event", [event]]``) as they arrive, oldest first.

        Meant for one consumer. Ends when this client closes the connection; raises
        `ConnectionLost` when the server or the network does.
        """
        while True:
            if self._events:
                yield self._events.popleft()
                continue
            if self._lost is not None:
                if self._closed_by_us:
                    return
                raise self._lost
            await self._wait(_Waiter(None))

    # -- reading, shared by every waiting task ---------------------------------------------------

    async def _wait(self, waiter: _Waiter) -> None:
        """Return once ``waiter`` is done, reading the connection while nobody else does."""
        self._waiters.add(waiter)
        try:
            while not waiter.done:
                if self._lost is not None:
                    waiter.finish(error=self._lost)
                    break
                if self._reading:
                    waiter.wake = anyio.Event()
                    await waiter.wake.wait()
                    continue
                self._reading = True
                try:
                    while not waiter.done:
                        await self._read()
                finally:
                    self._reading = False
        finally:
            self._waiters.discard(waiter)
            # Whether we read or were cancelled after being chosen to: somebody else reads now.
            if not self._reading:
                self._hand_off()

    def _hand_off(self) -> None:
        for other in self._waiters:
            if not other.done:
                other.wake.set()
                return

    async def _read(self) -> None:
        try:
            data = await self._stream.receive(_READ_SIZE)
        except anyio.EndOfStream:
            self._fail(ConnectionLost(self._close_reason("The server closed the connection.")))
            return
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            if self._lost is None:
                broke = f"The connection broke ({_describe(exc)})."
                self._fail(ConnectionLost(self._close_reason(broke)))
            return
        self._unpacker.feed(data)
        try:
            for message in self._unpacker:
                self._dispatch(message)
        except Exception as exc:
            self._fail(ConnectionLost(f"The server sent something unreadable: {exc}."))
            await self._stream.aclose()

    def _dispatch(self, message: Any) -> None:
        if not isinstance(message, list) or not message:
            raise ValueError(f"not a msgpack-RPC message: {type(message).__name__}")
        kind = message[0]
        if kind == RESPONSE and len(message) == 4:
            _, msgid, error, result = message
            if isinstance(error, Mapping) and error.get("code") == "protocol":
                # The server closes the connection after this (with msgid 0 when it could not
                # tell which request broke the protocol): the reason for the ConnectionLost.
                self._server_error = _rpc_error(error)
            waiter = self._calls.pop(msgid, None)
            if waiter is None:
                return  # its caller was cancelled
            if error is not None:
                waiter.finish(error=_rpc_error(error))
            else:
                waiter.finish(result)
        elif kind == NOTIFICATION and len(message) == 3:
            _, method, params = message
            if method != "event" or not isinstance(params, list):
                return  # not in protocol v1; a newer server's extras are ignored
            for event in params:
                if len(self._events) == self._events.maxlen:
                    self.events_dropped += 1
                self._events.append(event)
            for waiter in self._waiters:
                if waiter.msgid is None:
                    waiter.finish()
        else:
            raise ValueError(f"unexpected message type {kind!r}")

    def _close_reason(self, default: str) -> str:
        error = self._server_error
        return f"The server closed the connection: {error}." if error else default

    def _fail(self, error: ConnectionLost) -> None:
        if self._lost is None:
            self._lost = error
        for waiter in list(self._waiters):
            waiter.finish(error=error if waiter.msgid is not None else None)
        for waiter in list(self._calls.values()):
            waiter.finish(error=error)

    # -- the protocol's methods, one each (PROTOCOL.md); arguments left as None are not sent --

    async def _one(self, method: str, **arguments: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(method, **_args(**arguments))
        return result

    async def _many(self, method: str, **arguments: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call(method, **_args(**arguments))
        return result

    async def hello(self, token: str | None = None, client: str | None = None) -> dict[str, Any]:
        return await self._one("hello", token=token, client=client)

    async def ping(self) -> dict[str, Any]:
        return await self._one("ping")

    async def subscribe(
        self, topics: Sequence[str], *, queue: str | None = None, agent_id: str | None = None
    ) -> dict[str, Any]:
        return await self._one("subscribe", topics=list(topics), queue=queue, agent_id=agent_id)

    async def unsubscribe(self, topics: Sequence[str]) -> dict[str, Any]:
        return await self._one("unsubscribe", topics=list(topics))

    async def agent_login(
        self,
        agent_id: str,
        *,
        status: str | None = None,
        reason: str | None = None,
        capacity: int | None = None,
        skills: Mapping[str, int] | None = None,
        queues: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        return await self._one(
            "agent.login",
            agent_id=agent_id,
            status=status,
            reason=reason,
            capacity=capacity,
            skills=_plain(skills),
            queues=_plain(queues),
        )

    async def agent_logout(self, agent_id: str, *, force: bool | None = None) -> dict[str, Any]:
        return await self._one("agent.logout", agent_id=agent_id, force=force)

    async def agent_set_status(
        self, agent_id: str, status: str, *, reason: str | None = None
    ) -> dict[str, Any]:
        return await self._one("agent.set_status", agent_id=agent_id, status=status, reason=reason)

    async def agent_get(self, agent_id: str) -> dict[str, Any]:
        return await self._one("agent.get", agent_id=agent_id)

    async def agent_list(
        self, *, state: str | None = None, queue: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._many("agent.list", state=state, queue=queue)

    async def work_submit(
        self,
        queue: str,
        *,
        work_id: str | None = None,
        channel: str | None = None,
        priority: int | None = None,
        skills: Mapping[str, int] | None = None,
        size: int | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return await self._one(
            "work.submit",
            queue=queue,
            work_id=work_id,
            channel=channel,
            priority=priority,
            skills=_plain(skills),
            size=size,
            attributes=_plain(attributes),
        )

    async def work_accept(self, work_id: str) -> dict[str, Any]:
        return await self._one("work.accept", work_id=work_id)

    async def work_decline(self, work_id: str, *, reason: str | None = None) -> dict[str, Any]:
        return await self._one("work.decline", work_id=work_id, reason=reason)

    async def work_end(self, work_id: str) -> dict[str, Any]:
        return await self._one("work.end", work_id=work_id)

    async def work_transfer(self, work_id: str, queue: str) -> dict[str, Any]:
        return await self._one("work.transfer", work_id=work_id, queue=queue)

    async def work_cancel(self, work_id: str, *, reason: str | None = None) -> dict[str, Any]:
        return await self._one("work.cancel", work_id=work_id, reason=reason)

    async def work_get(self, work_id: str) -> dict[str, Any]:
        return await self._one("work.get", work_id=work_id)

    async def acw_request(self, work_id: str) -> dict[str, Any]:
        return await self._one("acw.request", work_id=work_id)

    async def acw_extend(self, work_id: str) -> dict[str, Any]:
        return await self._one("acw.extend", work_id=work_id)

    async def acw_complete(
        self,
        work_id: str,
        *,
        disposition: str | None = None,
        notes: str | None = None,
        fields: Mapping[str, Any] | None = None,
        follow_ups: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return await self._one(
            "acw.complete",
            work_id=work_id,
            disposition=disposition,
            notes=notes,
            fields=_plain(fields),
            follow_ups=None if follow_ups is None else [dict(f) for f in follow_ups],
        )

    async def acw_force_end(self, work_id: str) -> dict[str, Any]:
        return await self._one("acw.force_end", work_id=work_id)

    async def wrapup_get(self, work_id: str) -> list[dict[str, Any]]:
        return await self._many("wrapup.get", work_id=work_id)

    async def wrapup_list(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        agent_id: str | None = None,
        queue: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        return await self._many(
            "wrapup.list", since=since, until=until, agent_id=agent_id, queue=queue, limit=limit
        )

    async def queue_list(self) -> list[dict[str, Any]]:
        return await self._many("queue.list")

    async def queue_stats(self, queue: str) -> dict[str, Any]:
        return await self._one("queue.stats", queue=queue)

    async def config_reload(self) -> dict[str, Any]:
        return await self._one("config.reload")


def _plain(value: Mapping[str, Any] | Sequence[str] | None) -> Any:
    """A mapping or sequence as the dict or list msgpack packs (it refuses e.g. MappingProxy)."""
    if value is None:
        return None
    return dict(value) if isinstance(value, Mapping) else list(value)


def _describe(exc: BaseException) -> str:
    """What went wrong, for a person: anyio's stream errors often say it only in their cause."""
    cause = exc.__cause__ or exc.__context__
    return str(exc) or (str(cause) if cause is not None else "") or type(exc).__name__


def _rpc_error(error: Any) -> RpcError:
    if not isinstance(error, Mapping):
        return RpcError("internal", f"The server sent an error that is not a map: {error!r}.")
    data = error.get("data")
    return RpcError(
        str(error.get("code", "internal")),
        str(error.get("message", "")),
        data if isinstance(data, Mapping) else None,
    )

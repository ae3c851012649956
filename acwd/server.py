"""The msgpack-RPC server: a thin layer between TCP connections and the running node.

One task reads each connection and feeds the IO-free ``FrameDecoder``; each request runs in its
own task (requests may be pipelined; responses carry the msgid); one writer task drains a bounded
outbound buffer. Bad bytes get a ``protocol`` error and close only that connection; an
exception in one request is answered ``internal`` and logged, and nothing else notices.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
import ssl
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, TaskGroup, TaskStatus
from anyio.streams.stapled import MultiListener
from anyio.streams.tls import TLSStream

from acwd import __version__
from acwd.core.config import Settings
from acwd.core.errors import ConfigError, DomainError, ErrorCode
from acwd.core.views import FollowUp, Wrapup, to_plain
from acwd.protocol import messages as m
from acwd.protocol.framing import (
    FrameDecoder,
    ProtocolError,
    Request,
    encode_event,
    encode_response,
)
from acwd.runtime.bus import Subscription
from acwd.runtime.node import Node
from acwd.security import HelloThrottle, RequestBucket, is_disconnect, tls_context
from acwd.settings import load_settings

log = structlog.get_logger("acwd.server")

# Requests in progress per connection before we stop reading from it. It also bounds how much
# one connection can put ahead of everybody else in the event loop (and the memory that takes).
# Methods answered from memory without waiting on an actor or the journal: the reader answers
# them itself, in order, instead of starting a task for each.
INLINE = frozenset(
    {"ping", "agent.get", "agent.list", "work.get", "queue.list", "queue.stats", "unsubscribe"}
)
MAX_INFLIGHT = 32
WRITE_CHUNK = 256 * 1024
MAX_REFUSING = 256  # connections past max_connections being told so at one time


class Connection:
    """One client: its identity, decoder, in-flight requests and outbound buffer."""

    def __init__(self, server: Server, conn_id: int, stream: Any, peer: str) -> None:
        self.server = server
        self.id = conn_id
        self.stream = stream
        self.peer = peer
        self.host = peer  # the remote address without the port; the server sets it
        limits = server.settings.limits
        self.decoder = FrameDecoder(
            max_message_bytes=server.settings.server.max_message_bytes,
            max_depth=limits.max_depth,
            max_map_keys=limits.max_map_keys,
            max_array_items=limits.max_array_items,
        )
        self.role: str | None = None if server.auth else m.ADMIN
        self.principal = "anonymous" if server.auth else "local"
        self.agent_id: str | None = None  # for the agent role: the only agent it may act on
        self.greeted = False
        self.requests = 0
        self._out: deque[bytes] = deque()
        self._out_bytes = 0
        self._wake = anyio.Event()
        # fast_acquire: no yield to the loop per request, so a read's responses share one send.
        self._slots = anyio.Semaphore(MAX_INFLIGHT, fast_acquire=True)
        self._tg: TaskGroup | None = None
        self._reading = anyio.CancelScope()
        self.closing = False
        self._last_request = anyio.current_time()
        rate = limits.requests_per_s
        self._bucket = RequestBucket(rate) if rate else None
        self.rate_limited = 0  # requests refused with overloaded

    # -- outbound ------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        self._out.append(data)
        self._out_bytes += len(data)
        self._wake.set()
        if self._out_bytes > self.server.settings.server.max_outbound_bytes:
            log.warning(
                "closing connection: client is not reading",
                conn_id=self.id,
                peer=self.peer,
                buffered=self._out_bytes,
            )
            self.abort()

    def send_event(self, event: dict[str, Any]) -> None:
        self.send(encode_event(event))

    def stop_reading(self) -> None:
        """Shutdown: take no new requests; the ones in flight are answered, then we close."""
        self._reading.cancel()

    def abort(self) -> None:
        """Drop the connection now: pending output and in-flight requests are abandoned."""
        self.closing = True
        self._out.clear()
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            # Let the other requests of this read answer first: one send for many responses,
            # since a system call costs far more than a loop turn.
            await anyio.sleep(0)
            self._wake = anyio.Event()
            while self._out:
                chunk = [self._out.popleft()]
                size = len(chunk[0])
                while self._out and size < WRITE_CHUNK:
                    chunk.append(self._out.popleft())
                    size += len(chunk[-1])
                await self.stream.send(b"".join(chunk))
                self._out_bytes -= size

    async def _flush(self) -> None:
        with anyio.move_on_after(5):
            while self._out:
                await anyio.sleep(0.01)

    # -- inbound -------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.server.ssl_context is not None:
                await self._start_tls(self.server.ssl_context)
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._writer)
                tg.start_soon(self._hello_watchdog)
                with self._reading:
                    await self._read(tg)
                # The peer finished sending, or we are shutting down: answer what is in flight.
                for _ in range(MAX_INFLIGHT):
                    await self._slots.acquire()
                await self._flush()
                tg.cancel_scope.cancel()
        except Exception as exc:
            # A reset or broken peer is routine (anyio reports it inside an exception group);
            # anything else is a bug in this connection's handling, and it stays here.
            if not is_disconnect(exc):
                log.error("connection failed", conn_id=self.id, peer=self.peer, exc_info=exc)
        finally:
            self.closing = True
            with anyio.CancelScope(shield=True):
                await self.server.connection_closed(self)
                await self.stream.aclose()

    async def _read(self, tg: TaskGroup) -> None:
        while not self.server.stopping:
            try:
                data = await self.stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return
            try:
                # Shielded: a shutdown stops the reading, but what was read is still answered.
                with anyio.CancelScope(shield=True):
                    self.decoder.feed(data)
                    while (request := self.decoder.next_message()) is not None:
                        if self.closing or tg.cancel_scope.cancel_called:
                            return  # dropped, or the peer is gone: nobody would get the answers
                        self.requests += 1
                        self._last_request = anyio.current_time()
                        if self._refused(request):
                            continue
                        await self._slots.acquire()
                        if request.method in INLINE:
                            await self._handle(request)  # never waits: no task needed
                        else:
                            tg.start_soon(self._handle, request)
            except ProtocolError as exc:
                log.warning(
                    "protocol error; closing connection",
                    conn_id=self.id,
                    peer=self.peer,
                    error=exc.message,
                )
                self.send(encode_response(exc.msgid or 0, exc.to_wire(), None))
                await self._flush()
                tg.cancel_scope.cancel()
                return

    def _refused(self, request: Request) -> bool:
        """Answer at once, without running it, a request that comes too early or too fast."""
        if self.role is None and request.method != "hello":
            error = DomainError(ErrorCode.UNAUTHENTICATED, "Call hello with a token first.")
        elif self._bucket is not None and not self._bucket.take():
            self.rate_limited += 1
            if self.rate_limited == 1:
                log.info("request rate limit reached", conn_id=self.id, peer=self.peer)
            rate = self._bucket.rate
            error = DomainError(
                ErrorCode.OVERLOADED,
                f"More than {rate:g} requests per second on this connection; slow down.",
                {"requests_per_s": rate},
            )
        else:
            return False
        self.send(encode_response(request.msgid, error.to_wire(), None))
        if self.server.on_request is not None:
            self.server.on_request(request.method, error.code.value, 0.0)
        return True

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        try:
            with anyio.fail_after(self.server.settings.server.hello_timeout_s):
                self.stream = await TLSStream.wrap(
                    self.stream, server_side=True, ssl_context=context, standard_compatible=False
                )
        except Exception as exc:
            log.info(
                "TLS handshake failed", conn_id=self.id, peer=self.peer, reason=repr(exc)[:200]
            )
            raise

    async def _hello_watchdog(self) -> None:
        """Close a connection with no hello in time, then (if set) one idle for too long."""
        config = self.server.settings.server
        await anyio.sleep(config.hello_timeout_s)
        if not self.greeted and (self.server.auth or self.requests == 0):
            log.info("closing connection: no hello in time", conn_id=self.id, peer=self.peer)
            self.abort()
            return
        # Idle: no complete request for idle_timeout_s and none in progress. A client that
        # trickles bytes without finishing a message is idle too.
        while idle := self.server.settings.server.idle_timeout_s:
            quiet = anyio.current_time() - self._last_request
            if quiet >= idle and self._slots.value == MAX_INFLIGHT:
                log.info("closing connection: idle", conn_id=self.id, peer=self.peer, idle_s=idle)
                self.abort()
                return
            await anyio.sleep(max(idle - quiet, 0.05))

    async def _handle(self, request: Request) -> None:
        started = time.perf_counter()
        try:
            error, result = None, None
            try:
                spec, args = m.parse_request(request.method, request.params, self.server.limits)
                self._authorize(spec, args)
                result = to_plain(await HANDLERS[spec.name](self, args))
                response = encode_response(request.msgid, None, result)
            except DomainError as exc:
                error = exc.to_wire()
            except Exception as exc:
                # The context a person needs to find the trouble: who, on what item.
                params = request.params
                named = params[0] if params and isinstance(params[0], dict) else {}
                log.error(
                    "request failed",
                    conn_id=self.id,
                    peer=self.peer,
                    method=request.method,
                    agent_id=named.get("agent_id", self.agent_id),
                    work_id=named.get("work_id"),
                    exc_info=exc,
                )
                error = {"code": "internal", "message": "Internal error; it has been logged."}
            if error is not None:
                response = encode_response(request.msgid, error, None)
            self.send(response)
            if self.server.on_request is not None:
                code = error["code"] if error else "ok"
                self.server.on_request(request.method, code, time.perf_counter() - started)
        finally:
            self._slots.release()

    def _authorize(self, spec: m.MethodSpec, args: Any) -> None:
        if self.role is None and spec.name != "hello":
            raise DomainError(ErrorCode.UNAUTHENTICATED, "Call hello with a token first.")
        if spec.name == "hello" or self.role is None:
            return
        if self.role not in spec.roles:
            raise DomainError(
                ErrorCode.FORBIDDEN,
                f"The {self.role} role may not call {spec.name}.",
                {"role": self.role},
            )
        if self.role == m.AGENT and spec.agent_scoped:
            self._check_own(spec, args)

    def _check_own(self, spec: m.MethodSpec, args: Any) -> None:
        me = self.agent_id
        if spec.scope_argument == "agent_id":
            if getattr(args, "agent_id", None) not in (None, me):
                raise DomainError(ErrorCode.FORBIDDEN, f"An agent token may only act as {me}.")
            return
        item = self.server.node.router.items.get(args.work_id)
        holders = {item.agent_id, *(leg.agent_id for leg in item.legs)} if item else {me}
        if me not in holders:
            raise DomainError(ErrorCode.FORBIDDEN, f"Work item {args.work_id} is not {me}'s.")


# -- handlers: one per method ------------------------------------------------------------------

Handler = Callable[[Connection, Any], Awaitable[Any]]
HANDLERS: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def _mine(conn: Connection) -> str | None:
    """The agent an agent-role connection acts as; None for other roles."""
    return conn.agent_id if conn.role == m.AGENT else None


@handler("hello")
async def _hello(conn: Connection, args: m.Hello) -> Any:
    server = conn.server
    if server.auth:
        await server.hello_throttle.admit(conn.host)  # waits only after failures from there
        token = server.authenticate(args.token)
        if token is None:
            failures = server.hello_throttle.failed(conn.host)
            if failures <= 3 or failures & (failures - 1) == 0:  # then 4, 8, 16...: no log flood
                log.warning(
                    "hello refused: bad token", conn_id=conn.id, peer=conn.peer, failures=failures
                )
            raise DomainError(ErrorCode.UNAUTHENTICATED, "That token is not valid.")
        conn.role = token.role.value
        conn.agent_id = token.agent_id
        conn.principal = token.agent_id or f"{token.role.value}:{token.sha256[:8]}"
    conn.greeted = True
    return {
        "server": "acwd",
        "version": __version__,
        "protocol": 1,
        "principal": conn.principal,
        "role": conn.role,
    }


@handler("ping")
async def _ping(conn: Connection, args: m.Ping) -> Any:
    return {"time": conn.server.node.clock.now()}


@handler("subscribe")
async def _subscribe(conn: Connection, args: m.Subscribe) -> Any:
    agent_id = args.agent_id
    if conn.role == m.AGENT:
        agent_id = conn.agent_id
    sub = conn.server.node.bus.subscribe(
        conn.id, Subscription(frozenset(args.topics), args.queue, agent_id)
    )
    return {"subscribed": sorted(sub.topics)}


@handler("unsubscribe")
async def _unsubscribe(conn: Connection, args: m.Unsubscribe) -> Any:
    left = conn.server.node.bus.unsubscribe(conn.id, frozenset(args.topics))
    return {"subscribed": sorted(left)}


@handler("agent.login")
async def _login(conn: Connection, args: m.AgentLogin) -> Any:
    return await conn.server.node.login(
        args.agent_id,
        conn.id,
        status=args.status,
        reason=args.reason,
        capacity=args.capacity,
        skills=args.skills,
        queues=args.queues,
    )


@handler("agent.logout")
async def _logout(conn: Connection, args: m.AgentLogout) -> Any:
    return await conn.server.node.logout(args.agent_id, args.force)


@handler("agent.set_status")
async def _set_status(conn: Connection, args: m.AgentSetStatus) -> Any:
    return await conn.server.node.set_status(args.agent_id, args.status, args.reason)


@handler("agent.get")
async def _agent_get(conn: Connection, args: m.AgentGet) -> Any:
    return conn.server.node.agent_view(args.agent_id)


@handler("agent.list")
async def _agent_list(conn: Connection, args: m.AgentList) -> Any:
    return conn.server.node.agent_views(args.state, args.queue)


@handler("work.submit")
async def _submit(conn: Connection, args: m.WorkSubmit) -> Any:
    return await conn.server.node.submit(
        args.work_id or uuid.uuid4().hex,
        args.queue,
        args.channel,
        args.priority,
        args.skills,
        args.size,
        args.attributes,
    )


@handler("work.accept")
async def _accept(conn: Connection, args: m.WorkAccept) -> Any:
    return await conn.server.node.accept(args.work_id, _mine(conn))


@handler("work.decline")
async def _decline(conn: Connection, args: m.WorkDecline) -> Any:
    return await conn.server.node.decline(args.work_id, args.reason, _mine(conn))


@handler("work.end")
async def _end(conn: Connection, args: m.WorkEnd) -> Any:
    return await conn.server.node.end(args.work_id, _mine(conn))


@handler("work.transfer")
async def _transfer(conn: Connection, args: m.WorkTransfer) -> Any:
    return await conn.server.node.transfer(args.work_id, args.queue, _mine(conn))


@handler("work.cancel")
async def _cancel(conn: Connection, args: m.WorkCancel) -> Any:
    return await conn.server.node.cancel(args.work_id, args.reason)


@handler("work.get")
async def _work_get(conn: Connection, args: m.WorkGet) -> Any:
    return conn.server.node.work_view(args.work_id)


@handler("acw.request")
async def _acw_request(conn: Connection, args: m.AcwRequest) -> Any:
    return await conn.server.node.acw_request(args.work_id, _mine(conn))


@handler("acw.extend")
async def _acw_extend(conn: Connection, args: m.AcwExtend) -> Any:
    return await conn.server.node.acw_extend(args.work_id, _mine(conn))


@handler("acw.complete")
async def _acw_complete(conn: Connection, args: m.AcwComplete) -> Any:
    wrapup = Wrapup(
        disposition=args.disposition,
        notes=args.notes or "",
        fields=args.fields,
        follow_ups=tuple(FollowUp(f.title, f.due_at, f.assignee) for f in args.follow_ups or ()),
    )
    return await conn.server.node.acw_complete(args.work_id, wrapup, _mine(conn))


@handler("acw.force_end")
async def _acw_force_end(conn: Connection, args: m.AcwForceEnd) -> Any:
    return await conn.server.node.acw_force_end(args.work_id)


@handler("wrapup.get")
async def _wrapup_get(conn: Connection, args: m.WrapupGet) -> Any:
    records = await conn.server.node.journal.wrapups_of(args.work_id)
    if conn.role == m.AGENT:
        records = [r for r in records if r.agent_id == conn.agent_id]
    return records


@handler("wrapup.list")
async def _wrapup_list(conn: Connection, args: m.WrapupList) -> Any:
    return await conn.server.node.journal.wrapup_list(
        args.since, args.until, args.agent_id, args.queue, args.limit
    )


@handler("queue.list")
async def _queue_list(conn: Connection, args: m.QueueList) -> Any:
    settings = conn.server.settings
    queues = settings.to_dict()["queues"]
    return [
        {"queue": name, **cfg, "resolved": dataclasses.asdict(settings.resolve(name))}
        for name, cfg in queues.items()
    ]


@handler("queue.stats")
async def _queue_stats(conn: Connection, args: m.QueueStats) -> Any:
    return conn.server.node.queue_stats(args.queue)


@handler("config.reload")
async def _config_reload(conn: Connection, args: m.ConfigReload) -> Any:
    changes = await conn.server.reload()
    return {"reloaded": True, "changes": changes}


# -- the server --------------------------------------------------------------------------------


class Server:
    """Listens, accepts, and owns the connections; stops gracefully."""

    def __init__(self, node: Node, settings: Settings, config_path: str | None = None) -> None:
        self.node = node
        self.settings = settings
        self.config_path = config_path
        self.connections: dict[int, Connection] = {}
        self.stopping = False
        self.stopped = anyio.Event()
        # (method, "ok" or error code, seconds from arrival to the response being queued)
        self.on_request: Callable[[str, str, float], None] | None = None
        self._ids = itertools.count(1)
        self._accepting: anyio.CancelScope | None = None
        self._reload_lock = anyio.Lock()
        self.port = 0
        self.ssl_context: ssl.SSLContext | None = None  # set by serve from [server] tls_*
        self.hello_throttle = HelloThrottle()
        self.refused_connections = 0  # turned away at max_connections
        self._refusing = 0
        self._configure(settings)

    def _configure(self, settings: Settings) -> None:
        self.settings = settings
        self.auth = bool(settings.auth_tokens)
        limits = settings.limits
        self.limits = m.Limits(
            max_notes_bytes=limits.max_notes_bytes, max_field_keys=limits.max_fields
        )

    def authenticate(self, token: str | None) -> Any:
        if not token:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()
        found = None
        for candidate in self.settings.auth_tokens:
            if hmac.compare_digest(candidate.sha256, digest):  # constant time, every one checked
                found = candidate
        return found

    async def reload(self) -> list[str]:
        """Read the config file again; a bad file is refused and nothing changes."""
        async with self._reload_lock:
            try:
                settings = load_settings(self.config_path)
            except ConfigError as exc:
                raise DomainError(
                    ErrorCode.INVALID_STATE, f"Config not reloaded: {exc}", {"reason": str(exc)}
                ) from None
            if (settings.server.host, settings.server.port) != (
                self.settings.server.host,
                self.settings.server.port,
            ):
                raise DomainError(
                    ErrorCode.INVALID_STATE,
                    "Config not reloaded: [server] host and port only change on restart.",
                )
            changes = await self.node.reload(settings)
            self._configure(settings)
            log.info("configuration reloaded", changes=len(changes), path=self.config_path)
            return changes

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept connections until ``stop``; then let every connection finish what it has."""
        self.ssl_context = tls_context(self.settings.server)
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        listeners = list(multi.listeners) if isinstance(multi, MultiListener) else [multi]
        self.port = listeners[0].extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as self._accepting:
                task_status.started(self.port)
                async with multi, anyio.create_task_group() as accepting:
                    for listener in listeners:
                        accepting.start_soon(self._accept, listener, tg)
        log.info("server stopped")
        self.stopped.set()

    async def _accept(self, listener: Any, tg: TaskGroup) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                # Out of file descriptors and the like: log, back off, keep accepting.
                log.error("accept failed; retrying", error=str(exc))
                await anyio.sleep(0.1)
                continue
            conn_id = next(self._ids)
            try:
                address = stream.extra(SocketAttribute.remote_address)
            except Exception:
                address = "?"
            peer = str(address)
            if len(self.connections) >= self.settings.server.max_connections:
                tg.start_soon(self._refuse_connection, stream, peer)
                continue
            try:
                conn = Connection(self, conn_id, stream, peer)
                conn.host = str(address[0]) if isinstance(address, tuple) else peer
                self.connections[conn_id] = conn
                self.node.bus.attach(conn_id, conn.send_event)
            except Exception as exc:  # a bug setting up one connection must not stop the others
                log.error("connection setup failed", peer=peer, exc_info=exc)
                self.connections.pop(conn_id, None)
                await stream.aclose()
                continue
            tg.start_soon(conn.run)

    async def _refuse_connection(self, stream: Any, peer: str) -> None:
        """Over max_connections: answer ``overloaded`` (msgid 0) and close."""
        limit = self.settings.server.max_connections
        self.refused_connections += 1
        if self.refused_connections & (self.refused_connections - 1) == 0:  # 1, 2, 4, 8...
            log.warning(
                "connection refused: max_connections reached",
                peer=peer,
                max_connections=limit,
                refused_total=self.refused_connections,
            )
        # Plain TCP only (over TLS that would need a handshake first); and at most
        # MAX_REFUSING at a time, each for at most half a second, so that a flood past the
        # limit costs a bounded number of sockets: the rest are closed without a word.
        if self.ssl_context is None and self._refusing < MAX_REFUSING:
            self._refusing += 1
            error = DomainError(
                ErrorCode.OVERLOADED,
                f"The server is at its limit of {limit} connections; try again later.",
                {"max_connections": limit},
            )
            try:
                with anyio.move_on_after(0.5):
                    await stream.send(encode_response(0, error.to_wire(), None))
                    # Read what the client already sent, so closing does not reset the
                    # connection and discard the answer before the client reads it.
                    await stream.send_eof()
                    while len(await stream.receive(65536)):
                        pass
            except Exception:
                pass
            finally:
                self._refusing -= 1
        with anyio.CancelScope(shield=True):
            await stream.aclose()

    async def connection_closed(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        try:
            await self.node.connection_closed(conn.id)
        except Exception as exc:
            log.error("cleanup after connection failed", conn_id=conn.id, exc_info=exc)

    def stop(self) -> None:
        """Stop accepting; connections answer what is in flight and close."""
        self.stopping = True
        if self._accepting is not None:
            self._accepting.cancel()
        for conn in list(self.connections.values()):
            conn.stop_reading()

"""Prometheus metrics: counters and histograms fed by core events, gauges computed at scrape time.

The hot path (``observe``, called for every event the node publishes) only increments counters
and observes histograms, through label children cached per label set. Everything that is a level
rather than a flow (agents per state, queue depth, oldest wait, service level, ACW in progress,
connections) is computed when Prometheus scrapes, by ``SnapshotCollector``, from the node's
state; the scrape runs in the event loop without awaiting, so it reads one consistent moment.

No metric carries an agent_id or work_id label. Label values that come from clients are bounded:
RPC methods outside the protocol count as ``unknown``, cancel reasons other than the well-known
ones as ``other``. ``Metrics.serve`` exposes ``/metrics`` over a small anyio HTTP/1.1 listener, so
it runs under asyncio, uvloop and trio alike; a scrape reads the node in the event loop and
encodes in a worker thread.
"""

from __future__ import annotations

import gzip
import math
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.stapled import MultiListener
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from acwd import __version__
from acwd.core.events import (
    AcwEnded,
    AcwExtended,
    AgentStateChanged,
    Event,
    WorkAccepted,
    WorkCancelled,
    WorkCompleted,
    WorkDeclined,
    WorkEnded,
    WorkOffered,
    WorkOfferExpired,
    WorkOverflowed,
    WorkQueued,
    WorkRefused,
    WorkTransferred,
    WrapupRecorded,
)
from acwd.core.views import AcwEndReason, LegState, State
from acwd.protocol.messages import METHODS

if TYPE_CHECKING:
    from acwd.runtime.node import Node
    from acwd.server import Server

__all__ = ["Metrics", "SnapshotCollector"]

log = structlog.get_logger("acwd.metrics")

# Buckets per quantity, in seconds. Routing and timers: tens of microseconds to a second.
ROUTING_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
LATENESS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)
RPC_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip
JOURNAL_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
# Waits: seconds to tens of minutes (an SLA target is typically 20-60 s).
WAIT_BUCKETS = (1, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200, 1800, 3600)
# ACW: seconds to an hour (a typical timed ACW is 30-120 s).
ACW_BUCKETS = (5, 10, 15, 30, 45, 60, 90, 120, 180, 240, 300, 600, 900, 1800, 3600)
# Handle time (talk + ACW): a short chat to a long call.
HANDLE_BUCKETS = (10, 30, 60, 120, 180, 240, 300, 420, 600, 900, 1200, 1800, 2700, 3600, 7200)

OFFER_OUTCOMES = ("accepted", "declined", "timeout", "refused")
CANCEL_REASONS = ("cancelled", "abandoned", "max_wait")  # anything else counts as "other"
ACW_END_REASONS = tuple(r.value for r in AcwEndReason)
AGENT_STATES = tuple(s.value for s in State)

HTTP_TIMEOUT_S = 10.0
HTTP_MAX_HEAD = 8192
HTTP_MAX_CONNECTIONS = 32


class _Children:
    """Label children of one metric, cached: ``labels()`` costs a lock and a dict build."""

    __slots__ = ("children", "metric")

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        self.children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *labels: str) -> Any:
        child = self.children.get(labels)
        if child is None:
            child = self.children[labels] = self.metric.labels(*labels)
        return child


def _cancel_reason(reason: str) -> str:
    return reason if reason in CANCEL_REASONS else "other"


class Metrics:
    """Every acwd metric, in ``registry``; attach to a node (and server), then ``serve``."""

    def __init__(
        self, node: Node, registry: CollectorRegistry, server: Server | None = None
    ) -> None:
        # Prometheus computes rates from the counters themselves; the extra ``_created`` series
        # would double what every scrape carries. (A process-wide switch in prometheus_client.)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.node = node
        self.server = server
        self.registry = registry
        r = registry
        self.submitted = _Children(
            Counter("acwd_work_submitted", "Work items submitted.", ["queue"], registry=r)
        )
        self.completed = _Children(
            Counter("acwd_work_completed", "Work items completed.", ["queue"], registry=r)
        )
        self.cancelled = _Children(
            Counter(
                "acwd_work_cancelled",
                "Work items cancelled while queued or offered, by reason "
                "(cancelled, abandoned, max_wait, other).",
                ["queue", "reason"],
                registry=r,
            )
        )
        self.transferred = _Children(
            Counter(
                "acwd_work_transferred",
                "Work items transferred out of a queue by an agent.",
                ["queue"],
                registry=r,
            )
        )
        self.overflowed = _Children(
            Counter(
                "acwd_work_overflowed",
                "Work items moved out of a queue by its overflow rule.",
                ["queue"],
                registry=r,
            )
        )
        self.offers = _Children(
            Counter(
                "acwd_offers",
                "Offers by outcome (accepted, declined, timeout, refused).",
                ["queue", "outcome"],
                registry=r,
            )
        )
        self.wait = _Children(
            Histogram(
                "acwd_wait_seconds",
                "Time from enqueue to accept (what service level and ASA count).",
                ["queue"],
                buckets=WAIT_BUCKETS,
                registry=r,
            )
        )
        self.acw = _Children(
            Histogram(
                "acwd_acw_seconds",
                "Length of each ended ACW.",
                ["queue"],
                buckets=ACW_BUCKETS,
                registry=r,
            )
        )
        self.acw_ended = _Children(
            Counter(
                "acwd_acw_ended",
                "ACW periods ended, by reason (completed, timeout, forced, logout).",
                ["queue", "reason"],
                registry=r,
            )
        )
        self.acw_extensions = _Children(
            Counter("acwd_acw_extensions", "ACW extensions granted.", ["queue"], registry=r)
        )
        self.handle = _Children(
            Histogram(
                "acwd_handle_seconds",
                "Handle time of each finished leg: talk plus ACW when ACW followed.",
                ["queue"],
                buckets=HANDLE_BUCKETS,
                registry=r,
            )
        )
        self.routing = Histogram(
            "acwd_routing_latency_seconds",
            "From the moment an item and an agent were both ready to the offer reaching the agent.",
            buckets=ROUTING_BUCKETS,
            registry=r,
        )
        self.lateness = _Children(
            Histogram(
                "acwd_timer_lateness_seconds",
                "How late a due timer fired, by actor (agent: offer, ACW and grace timers; "
                "dispatcher: overflow, max-wait and re-offer timers).",
                ["actor"],
                buckets=LATENESS_BUCKETS,
                registry=r,
            )
        )
        self.rpc_requests = _Children(
            Counter(
                "acwd_rpc_requests",
                "RPC requests answered, by method and result code (ok or the error code).",
                ["method", "code"],
                registry=r,
            )
        )
        self.rpc_duration = _Children(
            Histogram(
                "acwd_rpc_duration_seconds",
                "Time from a request's arrival to its response being queued.",
                ["method"],
                buckets=RPC_BUCKETS,
                registry=r,
            )
        )
        self.journal_commit = Histogram(
            "acwd_journal_commit_seconds",
            "Duration of each journal group commit.",
            buckets=JOURNAL_BUCKETS,
            registry=r,
        )
        Info("acwd_build", "The acwd build.", registry=r).info({"version": __version__})
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.snapshot = SnapshotCollector(node, server)
        r.register(self.snapshot)

        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            WorkQueued: self._queued,
            WorkOffered: self._offered,
            WorkAccepted: self._accepted,
            WorkDeclined: self._declined,
            WorkOfferExpired: self._expired,
            WorkRefused: self._refused,
            WorkEnded: self._ended,
            WorkTransferred: self._transferred,
            WorkOverflowed: self._overflowed,
            WorkCancelled: self._cancelled,
            WorkCompleted: self._completed,
            AcwExtended: self._extended,
            AcwEnded: self._acw_ended,
            WrapupRecorded: self._wrapup,
            AgentStateChanged: self._state_changed,
        }
        # Routing latency bookkeeping: when each queued item and each agent became ready.
        self._live: set[str] = set()  # work submitted and not yet completed or cancelled
        self._item_ready: dict[str, float] = {}
        self._backoff: dict[str, tuple[str, float]] = {}  # work_id -> (agent_id, no offer before)
        self._agent_ready: dict[str, float] = {}
        self._settings_seen: object = None
        self._encoders = anyio.CapacityLimiter(2)
        self.prepare()

    # -- wiring --------------------------------------------------------------------------------

    def attach(self) -> None:
        """Register on the node's observer hooks, the server's request hook and the journal."""
        node = self.node
        node.observers.append(self.observe)
        node.lateness_observers.append(self.timer_late)
        if self.server is not None:
            previous = self.server.on_request
            if previous is None:
                self.server.on_request = self.request_done
            else:

                def both(method: str, code: str, seconds: float) -> None:
                    previous(method, code, seconds)
                    self.request_done(method, code, seconds)

                self.server.on_request = both
        journal = getattr(node, "journal", None)
        if journal is not None and hasattr(journal, "on_commit"):
            journal.on_commit = self.journal_commit.observe

    def prepare(self) -> None:
        """Create the per-queue series at zero, so rates and alerts see them from the start."""
        settings = self.node.settings
        if settings is self._settings_seen:
            return
        self._settings_seen = settings
        for queue in settings.queues:
            self.submitted(queue)
            self.completed(queue)
            self.transferred(queue)
            self.overflowed(queue)
            self.acw_extensions(queue)
            self.wait(queue)
            self.acw(queue)
            self.handle(queue)
            for outcome in OFFER_OUTCOMES:
                self.offers(queue, outcome)
            for reason in (*CANCEL_REASONS, "other"):
                self.cancelled(queue, reason)
            for reason in ACW_END_REASONS:
                self.acw_ended(queue, reason)
        for actor in ("agent", "dispatcher"):
            self.lateness(actor)

    # -- hooks (hot path) ----------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        """Node observer: count one core event."""
        handle = self._handlers.get(type(event))
        if handle is not None:
            handle(event)

    def timer_late(self, actor: str, seconds: float) -> None:
        self.lateness(actor).observe(seconds)

    def request_done(self, method: str, code: str, seconds: float) -> None:
        if method not in METHODS:
            method = "unknown"
        self.rpc_requests(method, code).inc()
        self.rpc_duration(method).observe(seconds)

    def _queued(self, e: WorkQueued) -> None:
        if e.work_id not in self._live:  # a re-queue (decline, timeout, transfer) is no new work
            self._live.add(e.work_id)
            self.submitted(e.queue).inc()
        self._item_ready[e.work_id] = e.at

    def _offered(self, e: WorkOffered) -> None:
        ready = self._item_ready.pop(e.work_id, None)
        if ready is None:
            return
        ready = max(ready, self._agent_ready.get(e.agent_id, ready))
        backoff = self._backoff.get(e.work_id)
        if backoff is not None and backoff[0] == e.agent_id:
            ready = max(ready, backoff[1])
        self.routing.observe(max(0.0, e.at - ready))

    def _accepted(self, e: WorkAccepted) -> None:
        self.offers(e.queue, "accepted").inc()
        self.wait(e.queue).observe(e.wait_s)

    def _missed(self, e: WorkDeclined | WorkOfferExpired, outcome: str) -> None:
        self.offers(e.queue, outcome).inc()
        try:
            backoff = self.node.settings.resolve(e.queue, None, e.agent_id).reoffer_backoff_s
        except KeyError:
            backoff = 0.0
        self._backoff[e.work_id] = (e.agent_id, e.at + backoff)

    def _declined(self, e: WorkDeclined) -> None:
        self._missed(e, "declined")

    def _expired(self, e: WorkOfferExpired) -> None:
        self._missed(e, "timeout")

    def _refused(self, e: WorkRefused) -> None:
        self.offers(e.queue, "refused").inc()

    def _ended(self, e: WorkEnded) -> None:
        if not e.acw:  # with ACW, the handle time is observed when the wrap-up is recorded
            self.handle(e.queue).observe(e.talk_s)
            self._agent_ready[e.agent_id] = e.at

    def _transferred(self, e: WorkTransferred) -> None:
        self.transferred(e.from_queue).inc()

    def _overflowed(self, e: WorkOverflowed) -> None:
        self.overflowed(e.from_queue).inc()

    def _finished(self, work_id: str) -> None:
        self._live.discard(work_id)
        self._item_ready.pop(work_id, None)
        self._backoff.pop(work_id, None)

    def _cancelled(self, e: WorkCancelled) -> None:
        self.cancelled(e.queue, _cancel_reason(e.reason)).inc()
        self._finished(e.work_id)

    def _completed(self, e: WorkCompleted) -> None:
        self.completed(e.queue).inc()
        self._finished(e.work_id)

    def _extended(self, e: AcwExtended) -> None:
        self.acw_extensions(e.queue).inc()

    def _acw_ended(self, e: AcwEnded) -> None:
        self.acw_ended(e.queue, e.reason).inc()
        self.acw(e.queue).observe(e.acw_seconds)
        self._agent_ready[e.agent_id] = e.at

    def _wrapup(self, e: WrapupRecorded) -> None:
        record = e.record
        self.handle(record.queue).observe(record.talk_s + record.acw_seconds)

    def _state_changed(self, e: AgentStateChanged) -> None:
        if e.to == State.AVAILABLE.value:
            self._agent_ready[e.agent_id] = e.at
        elif e.to == State.OFFLINE.value:
            self._agent_ready.pop(e.agent_id, None)

    # -- exposition ----------------------------------------------------------------------------

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The scrape body and its content type (OpenMetrics when the scraper asks for it)."""
        self.prepare()
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    async def exposition_async(self, accept: str = "", gzipped: bool = False) -> tuple[bytes, str]:
        """``exposition`` for the event loop: the node is read here, in one go; the encoding
        (tens of milliseconds for a few thousand series) runs in a worker thread, so a scrape
        does not hold up timers and offers. Counters and histograms are thread-safe."""
        self.prepare()
        families = list(self.snapshot.compute())
        encoder, content_type = choose_encoder(accept)

        def encode() -> bytes:
            self.snapshot.frozen.families = families
            try:
                body = encoder(self.registry)
            finally:
                self.snapshot.frozen.families = None
            return gzip.compress(body, compresslevel=6) if gzipped else body

        body = await anyio.to_thread.run_sync(encode, limiter=self._encoders)
        return body, content_type

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port."""
        multi = await anyio.create_tcp_listener(local_host=host, local_port=port)
        listeners = list(multi.listeners) if isinstance(multi, MultiListener) else [multi]
        bound: int = listeners[0].extra(SocketAttribute.local_port)
        async with multi, anyio.create_task_group() as tg:
            for listener in listeners:
                tg.start_soon(self._accept, listener, tg)
            task_status.started(bound)

    async def _accept(self, listener: Any, tg: Any) -> None:
        open_connections = 0

        async def handle(stream: SocketStream) -> None:
            nonlocal open_connections
            try:
                await self._http(stream)
            except _NETWORK_ERRORS:
                pass  # the scraper went away
            except Exception as exc:  # a bug here must not take the daemon down
                log.error("metrics request failed", exc_info=exc)
            finally:
                open_connections -= 1

        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors and the like: back off, go on
                log.error("metrics accept failed; retrying", error=str(exc))
                await anyio.sleep(0.1)
                continue
            if open_connections >= HTTP_MAX_CONNECTIONS:
                with anyio.CancelScope(shield=True):
                    await stream.aclose()
                continue
            open_connections += 1
            tg.start_soon(handle, stream)

    async def _http(self, stream: SocketStream) -> None:
        """One HTTP/1.1 exchange, then close: what a Prometheus scrape needs, and no more."""
        async with stream:
            with anyio.move_on_after(HTTP_TIMEOUT_S):
                head = b""
                while b"\r\n\r\n" not in head:
                    if len(head) > HTTP_MAX_HEAD:
                        await stream.send(_response(431, b"Request header too large\n"))
                        return
                    head += await stream.receive(4096)
                try:
                    response = await self._respond(head)
                except Exception as exc:
                    log.error("metrics exposition failed", exc_info=exc)
                    response = _response(500, b"Internal error; it has been logged.\n")
                await stream.send(response)

    async def _respond(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _response(400, b"Bad request\n")
        method, target = parts[0], parts[1]
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if method not in (b"GET", b"HEAD"):
            return _response(405, b"Method not allowed\n", extra=b"Allow: GET, HEAD\r\n")
        path = target.split(b"?", 1)[0]
        if path == b"/metrics":
            gzipped = b"gzip" in headers.get(b"accept-encoding", b"")
            body, content_type = await self.exposition_async(
                headers.get(b"accept", b"").decode("latin-1"), gzipped
            )
            extra = b"Content-Encoding: gzip\r\n" if gzipped else b""
            return _response(200, body, content_type.encode(), extra, head_only=method == b"HEAD")
        if path == b"/":
            page = b'<html><body><a href="/metrics">acwd metrics</a></body></html>\n'
            return _response(200, page, b"text/html; charset=utf-8", head_only=method == b"HEAD")
        return _response(404, b"Not found; the metrics are at /metrics\n")


_NETWORK_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,
)
_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
}


def _response(
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    extra: bytes = b"",
    head_only: bool = False,
) -> bytes:
    head = (
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%sConnection: close\r\n\r\n"
        % (status, _REASONS[status], content_type, len(body), extra)
    )
    return head if head_only else head + body


class SnapshotCollector(Collector):
    """Levels computed at scrape time from the node: nothing on the hot path keeps them."""

    def __init__(self, node: Node, server: Server | None = None) -> None:
        self.node = node
        self.server = server
        # Set in a worker thread encoding a scrape: the families computed in the event loop.
        self.frozen = threading.local()

    def describe(self) -> Iterator[Metric]:
        for name, doc, labels in _SNAPSHOT_FAMILIES:
            yield GaugeMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        families: list[Metric] | None = getattr(self.frozen, "families", None)
        yield from families if families is not None else self.compute()

    def compute(self) -> Iterator[Metric]:
        """Read the node now (call it in the event loop's thread)."""
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, doc, labels in _SNAPSHOT_FAMILIES
        }
        node = self.node
        if self.server is not None:
            families["acwd_connections"].add_metric([], len(self.server.connections))
        dispatcher = getattr(node, "dispatcher", None)
        if dispatcher is None:  # not running yet: no state to report
            yield from families.values()
            return
        now = node.clock.now()
        states: Tally[str] = Tally()
        acw_oldest: dict[str, float] = {}
        for actor in node.actors.values():
            machine = actor.state
            states[machine.state.value] += 1
            for leg in machine.legs.values():
                if leg.state is LegState.WRAPPING and leg.acw is not None:
                    elapsed = now - leg.acw.started_at
                    if elapsed > acw_oldest.get(leg.queue, -math.inf):
                        acw_oldest[leg.queue] = elapsed
        for state in AGENT_STATES:
            families["acwd_agents"].add_metric([state], states[state])
        router = dispatcher.state
        settings = node.settings
        for queue in settings.queues:
            index = router.queues.get(queue)
            oldest = min((item.enqueued_at for item in router.waiting(queue)), default=now)
            families["acwd_queue_waiting"].add_metric([queue], index.waiting if index else 0)
            families["acwd_queue_oldest_wait_seconds"].add_metric([queue], max(0.0, now - oldest))
            families["acwd_acw_oldest_seconds"].add_metric([queue], acw_oldest.get(queue, 0.0))
            work = settings.resolve(queue)
            families["acwd_acw_configured_seconds"].add_metric([queue], work.acw_seconds)
            families["acwd_service_level_target_seconds"].add_metric([queue], work.sla_target_s)
            stats = node.stats.queues.get(queue)
            level = stats.view(now)["service_level"] if stats is not None else None
            if level is not None:  # nothing answered in the window: no ratio, not a zero
                families["acwd_service_level_ratio"].add_metric([queue], level)
        yield from families.values()


_SNAPSHOT_FAMILIES: tuple[tuple[str, str, list[str]], ...] = (
    ("acwd_agents", "Agents by state (offline, busy, acw, away, available).", ["state"]),
    ("acwd_queue_waiting", "Work items waiting in the queue.", ["queue"]),
    (
        "acwd_queue_oldest_wait_seconds",
        "How long the oldest waiting item has waited (0 when none waits).",
        ["queue"],
    ),
    (
        "acwd_service_level_ratio",
        "Share of items answered within sla_target_s over the last sla_window_s "
        "(absent while nothing was answered in the window).",
        ["queue"],
    ),
    ("acwd_service_level_target_seconds", "The queue's configured sla_target_s.", ["queue"]),
    (
        "acwd_acw_oldest_seconds",
        "How long the longest ACW in progress has lasted (0 when none).",
        ["queue"],
    ),
    ("acwd_acw_configured_seconds", "The queue's configured acw_seconds.", ["queue"]),
    ("acwd_connections", "Open client connections.", []),
)

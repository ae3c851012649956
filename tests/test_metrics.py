"""Metrics in process: a short lifecycle through a running Node and Server, then the exposition.

Runs on real time with sub-second offer and ACW timers (the HTTP endpoint does real socket IO,
which a mock clock would race), under asyncio, uvloop and trio.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgpack  # type: ignore[import-untyped]
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from acwd.core.config import Settings
from acwd.core.events import Event, Offer
from acwd.core.views import Wrapup
from acwd.metrics import Metrics
from acwd.protocol.framing import encode_request
from acwd.runtime.node import Node
from acwd.server import Server

pytestmark = pytest.mark.anyio

REQUIRED = (
    "acwd_agents",
    "acwd_queue_waiting",
    "acwd_queue_oldest_wait_seconds",
    "acwd_work_submitted",
    "acwd_work_completed",
    "acwd_work_cancelled",
    "acwd_offers",
    "acwd_wait_seconds",
    "acwd_acw_seconds",
    "acwd_acw_ended",
    "acwd_acw_extensions",
    "acwd_handle_seconds",
    "acwd_service_level_ratio",
    "acwd_routing_latency_seconds",
    "acwd_timer_lateness_seconds",
    "acwd_rpc_requests",
    "acwd_rpc_duration_seconds",
    "acwd_connections",
    "acwd_journal_commit_seconds",
    "acwd_build_info",
    "process_cpu_seconds",
    "process_resident_memory_bytes",
)

CONFIG: dict[str, Any] = {
    "journal": {"path": ":memory:"},
    "defaults": {
        "offer_timeout_s": 0.2,
        "reoffer_backoff_s": 0.0,
        "on_timeout_status": "available",
        "acw_seconds": 0.3,
        "extension_seconds": 0.1,
    },
    "queues": {"default": {"channel": "chat"}, "sales": {"channel": "chat"}},
}


def require_promtool() -> str:
    """promtool's path; skips without it, unless CI requires it (then the test fails)."""
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("ACWD_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason}, and ACWD_REQUIRE_PROMETHEUS=1 requires it")
        pytest.skip(reason)
    return path


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    if request.param[1].get("use_uvloop"):
        pytest.importorskip("uvloop", reason="uvloop is optional (extra acwd[uvloop])")
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


class Daemon:
    def __init__(self, node: Node, server: Server, metrics: Metrics, metrics_port: int) -> None:
        self.node, self.server, self.metrics = node, server, metrics
        self.metrics_port = metrics_port
        self.events: list[Event] = []
        node.observers.append(self.events.append)

    async def until(self, check: Callable[[], bool], what: str, timeout: float = 3.0) -> None:
        with anyio.fail_after(timeout):
            while not check():
                await anyio.sleep(0.005)

    async def offered(self, work_id: str, times: int) -> None:
        """Until the agent holds the ``times``-th offer of ``work_id`` (its work.offered event)."""

        def count() -> int:
            return sum(1 for e in self.events if e.type == "work.offered" and e.work_id == work_id)

        await self.until(lambda: count() >= times, f"{work_id} offered {times} times")

    def state(self, work_id: str) -> str:
        state: str = self.node.work_view(work_id).state
        return state

    async def http(self, request: bytes) -> tuple[str, dict[str, str], bytes]:
        async with await anyio.connect_tcp("127.0.0.1", self.metrics_port) as stream:
            await stream.send(request)
            data = b""
            with anyio.fail_after(5):
                while True:
                    try:
                        data += await stream.receive()
                    except anyio.EndOfStream:
                        break
        head, _, body = data.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return status, headers, body

    async def scrape(self) -> dict[str, Any]:
        status, headers, body = await self.http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == "HTTP/1.1 200 OK"
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        self.text = body.decode()
        return {f.name: f for f in text_string_to_metric_families(self.text)}


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    settings = Settings.from_dict(CONFIG)
    node = Node(settings)
    server = Server(node, settings)
    metrics = Metrics(node, CollectorRegistry(), server)
    metrics.attach()
    async with anyio.create_task_group() as tg:
        await tg.start(node.run)
        rpc_port = await tg.start(server.serve, "127.0.0.1", 0)
        metrics_port = await tg.start(metrics.serve, "127.0.0.1", 0)
        running = Daemon(node, server, metrics, metrics_port)
        running.rpc_port = rpc_port  # type: ignore[attr-defined]
        yield running
        server.stop()
        tg.cancel_scope.cancel()


def value(families: dict[str, Any], name: str, sample: str, **labels: str) -> float:
    for s in families[name].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in {name}")


async def lifecycle(d: Daemon) -> None:
    """Offers declined, timed out, refused and accepted; ACW extended, completed and timed out;
    work cancelled; RPC requests answered and refused."""
    node = d.node
    await node.login("a1", None, queues=["default"])
    await node.submit("w1", "default")
    await d.offered("w1", 1)
    await node.decline("w1", "busy")
    await d.offered("w1", 2)  # then it times out
    await d.offered("w1", 3)
    await node.accept("w1")
    await node.end("w1")
    await node.acw_extend("w1")
    await node.acw_complete("w1", Wrapup(disposition="resolved"))

    await node.submit("w2", "default")
    await d.offered("w2", 1)
    await node.accept("w2")
    await node.end("w2")  # its ACW (0.3 s) ends on the timer
    await d.until(lambda: d.state("w2") == "completed", "w2 ACW timed out")

    await node.set_status("a1", "away", "break")
    await node.submit("w3", "default")
    await node.cancel("w3", "abandoned")
    await node.submit("w4", "default")
    await node.cancel("w4", "customer hung up")
    await node.submit("w5", "default")  # stays waiting: nobody is available
    # The dispatcher's view of an agent can lag; the agent then refuses the offer. Provoke that
    # directly: an offer of w5 to a1, who is away. The router ignores the return (w5 is queued).
    assert node.offer(Offer("a1", node.router.items["w5"].ticket()))
    await d.until(lambda: any(e.type == "work.refused" for e in d.events), "refusal")

    async with await anyio.connect_tcp("127.0.0.1", d.rpc_port) as stream:  # type: ignore[attr-defined]
        await stream.send(encode_request(1, "ping", []) + encode_request(2, "no.such", []))
        unpacker = msgpack.Unpacker()
        replies: list[Any] = []
        with anyio.fail_after(5):
            while len(replies) < 2:
                unpacker.feed(await stream.receive())
                replies.extend(unpacker)
        assert sorted(r[1] for r in replies) == [1, 2]
        families = await d.scrape()  # while the connection is open
        assert value(families, "acwd_connections", "acwd_connections") == 1


async def test_every_required_metric_after_a_lifecycle(daemon: Daemon) -> None:
    await lifecycle(daemon)
    await daemon.until(lambda: not daemon.server.connections, "connection closed")
    families = await daemon.scrape()
    missing = [name for name in REQUIRED if name not in families]
    assert not missing, f"missing metrics: {missing}"

    def v(name: str, sample: str | None = None, **labels: str) -> float:
        return value(families, name, sample or name, **labels)

    q = {"queue": "default"}
    assert v("acwd_work_submitted", "acwd_work_submitted_total", **q) == 5
    assert v("acwd_work_submitted", "acwd_work_submitted_total", queue="sales") == 0
    assert v("acwd_work_completed", "acwd_work_completed_total", **q) == 2
    cancelled = "acwd_work_cancelled_total"
    assert v("acwd_work_cancelled", cancelled, reason="abandoned", **q) == 1
    assert v("acwd_work_cancelled", cancelled, reason="other", **q) == 1
    for outcome, count in (("accepted", 2), ("declined", 1), ("timeout", 1), ("refused", 1)):
        assert v("acwd_offers", "acwd_offers_total", outcome=outcome, **q) == count, outcome
    assert v("acwd_wait_seconds", "acwd_wait_seconds_count", **q) == 2
    assert v("acwd_wait_seconds", "acwd_wait_seconds_sum", **q) >= 0.2  # w1 waited its timeout
    assert v("acwd_acw_ended", "acwd_acw_ended_total", reason="completed", **q) == 1
    assert v("acwd_acw_ended", "acwd_acw_ended_total", reason="timeout", **q) == 1
    assert v("acwd_acw_extensions", "acwd_acw_extensions_total", **q) == 1
    assert v("acwd_acw_seconds", "acwd_acw_seconds_count", **q) == 2
    assert v("acwd_acw_seconds", "acwd_acw_seconds_sum", **q) == pytest.approx(0.3, abs=0.1)
    assert v("acwd_handle_seconds", "acwd_handle_seconds_count", **q) == 2
    assert v("acwd_routing_latency_seconds", "acwd_routing_latency_seconds_count") == 4
    late = v("acwd_timer_lateness_seconds", "acwd_timer_lateness_seconds_count", actor="agent")
    assert late >= 2  # the offer timeout and the ACW timeout
    assert v("acwd_rpc_requests", "acwd_rpc_requests_total", method="ping", code="ok") == 1
    assert (
        v("acwd_rpc_requests", "acwd_rpc_requests_total", method="unknown", code="method_not_found")
        == 1
    )
    assert v("acwd_rpc_duration_seconds", "acwd_rpc_duration_seconds_count", method="ping") == 1
    assert v("acwd_journal_commit_seconds", "acwd_journal_commit_seconds_count") > 0
    assert v("acwd_agents", state="away") == 1
    assert v("acwd_agents", state="available") == 0
    assert v("acwd_queue_waiting", **q) == 1
    assert v("acwd_queue_waiting", queue="sales") == 0
    assert v("acwd_queue_oldest_wait_seconds", **q) > 0
    assert v("acwd_service_level_ratio", **q) == 1.0  # both answered well within 20 s
    assert not any(
        s.labels.get("queue") == "sales" for s in families["acwd_service_level_ratio"].samples
    )
    assert v("acwd_connections") == 0
    build = [s for s in families["acwd_build_info"].samples if s.name == "acwd_build_info"]
    assert build and build[0].labels["version"] and build[0].value == 1
    for family in families.values():  # no per-agent or per-item series
        for s in family.samples:
            assert not {"agent_id", "work_id"} & set(s.labels), s

    promtool = require_promtool()
    check = subprocess.run(
        [promtool, "check", "metrics"], input=daemon.text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_acw_in_progress_gauges(daemon: Daemon) -> None:
    node = daemon.node
    await node.login("a1", None)
    await node.submit("w1", "sales")
    await daemon.offered("w1", 1)
    await node.accept("w1")
    await node.end("w1")
    await anyio.sleep(0.05)
    families = await daemon.scrape()
    assert value(families, "acwd_agents", "acwd_agents", state="acw") == 1
    oldest = value(families, "acwd_acw_oldest_seconds", "acwd_acw_oldest_seconds", queue="sales")
    assert 0.05 <= oldest < 0.3
    assert (
        value(families, "acwd_acw_oldest_seconds", "acwd_acw_oldest_seconds", queue="default") == 0
    )
    configured = value(
        families, "acwd_acw_configured_seconds", "acwd_acw_configured_seconds", queue="sales"
    )
    assert configured == 0.3


async def test_http_endpoint(daemon: Daemon) -> None:
    status, headers, body = await daemon.http(
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n"
        b"Accept-Encoding: gzip\r\n\r\n"
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert headers["content-encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert 'acwd_agents{state="available"} 0' in text and text.endswith("# EOF\n")

    status, headers, body = await daemon.http(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 200 OK" and body == b"" and int(headers["content-length"]) > 0
    status, _, _ = await daemon.http(b"GET /nope HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 404 Not Found"
    status, headers, _ = await daemon.http(b"POST /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 405 Method Not Allowed" and headers["allow"] == "GET, HEAD"
    status, _, _ = await daemon.http(b"garbage\r\n\r\n")
    assert status == "HTTP/1.1 400 Bad Request"
    status, _, _ = await daemon.http(b"GET /" + b"x" * 9000 + b" HTTP/1.1\r\n")
    assert status == "HTTP/1.1 431 Request Header Fields Too Large"


async def test_http_survives_bad_scrapers_and_collector_bugs(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for partial in (b"", b"GET /met"):  # connect and leave, or leave mid-request
        async with await anyio.connect_tcp("127.0.0.1", daemon.metrics_port) as stream:
            if partial:
                await stream.send(partial)

    def broken() -> Any:
        raise RuntimeError("a bug in the collector")

    monkeypatch.setattr(daemon.metrics.snapshot, "compute", broken)
    status, _, body = await daemon.http(b"GET /metrics HTTP/1.1\r\n\r\n")
    assert status == "HTTP/1.1 500 Internal Server Error" and b"logged" in body
    monkeypatch.undo()
    families = await daemon.scrape()  # the endpoint, and the daemon, carry on
    assert "acwd_agents" in families


def test_client_label_values_are_bounded() -> None:
    settings = Settings.from_dict(CONFIG)
    node = Node(settings)
    metrics = Metrics(node, CollectorRegistry())
    for i in range(100):
        metrics.request_done(f"made.up.{i}", "method_not_found", 0.001)
    assert list(metrics.rpc_requests.children) == [("unknown", "method_not_found")]

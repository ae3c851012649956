"""A real Prometheus scrapes a real acwd; every PromQL expression we ship is evaluated on the data.

acwd runs as a subprocess (``--port 0``, metrics on a free loopback port); Prometheus (Debian's
``prometheus`` package) scrapes it every second and loads deploy/prometheus/acwd-alerts.yml. Two
rounds of traffic over raw msgpack-RPC make every counter move between scrapes. Then:

- every expression of deploy/grafana/acwd-dashboard.json returns at least one finite sample;
- every alert rule was evaluated by Prometheus without error, its expression parses and returns
  a vector (empty, as nothing is wrong), and every operand of its comparisons and set operators
  (``up{job="acwd"}``, ``acwd_service_level_ratio``, ...) returns finite data, except the operands
  listed in ``MAY_BE_EMPTY`` with the reason they legitimately have no series here.

Without ``prometheus``/``promtool`` the test is skipped, unless ``ACWD_REQUIRE_PROMETHEUS=1`` (as
.ci/run sets), which makes it fail instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from acwd.protocol.framing import encode_request

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "acwd-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "acwd-dashboard.json"

# Operands of alert expressions that have no series in a healthy run, and why.
MAY_BE_EMPTY = {
    'sum by (job, instance) (increase(acwd_rpc_requests_total{code="internal"}[10m]))': (
        "no request failed with an internal error, and that counter's series is only created "
        "by the first one"
    ),
}
# Grafana's variables, as an "All" selection and a rate window that covers the whole run.
VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$queue": ".*"}

ACWD_CONFIG = """
[metrics]
host = "127.0.0.1"
port = {metrics_port}

[journal]
path = "{journal}"

[defaults]
acw_seconds = 0.5
offer_timeout_s = 0.5
reoffer_backoff_s = 0.0
on_timeout_status = "available"

[queues.default]
channel = "chat"

[queues.sales]
channel = "chat"
"""


def tools() -> tuple[str, str]:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        reason = "prometheus/promtool are not installed (Debian package prometheus)"
        if os.environ.get("ACWD_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason}, and ACWD_REQUIRE_PROMETHEUS=1 requires them")
        pytest.skip(reason)
    return prometheus, promtool


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (OSError, urllib.error.URLError, AssertionError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Rpc:
    """A blocking msgpack-RPC connection: one request at a time; events are kept."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.unpacker = msgpack.Unpacker()
        self.msgid = 0
        self.events: list[dict[str, Any]] = []

    def _receive(self) -> None:
        data = self.sock.recv(65536)
        assert data, "acwd closed the connection"
        self.unpacker.feed(data)

    def send(self, method: str, **params: Any) -> int:
        self.msgid += 1
        self.sock.sendall(encode_request(self.msgid, method, [params] if params else []))
        return self.msgid

    def reply(self, msgid: int) -> tuple[Any, Any]:
        while True:
            for message in self.unpacker:
                if message[0] == 2:
                    self.events.extend(message[2])
                elif message[1] == msgid:
                    return message[2], message[3]
            self._receive()

    def call(self, method: str, **params: Any) -> Any:
        error, result = self.reply(self.send(method, **params))
        assert error is None, f"{method}: {error}"
        return result

    def fails(self, method: str, **params: Any) -> str:
        error, _ = self.reply(self.send(method, **params))
        assert error is not None, f"{method} should have failed"
        code: str = error["code"]
        return code

    def offered(self, work_id: str, times: int = 1) -> None:
        """Until an agent holds the ``times``-th offer of ``work_id``: its work.offered event
        (our agents are logged in on this connection, so their events come here)."""

        def count() -> int:
            return sum(
                1 for e in self.events if e["type"] == "work.offered" and e["work_id"] == work_id
            )

        deadline = time.monotonic() + 5
        while count() < times:
            assert time.monotonic() < deadline, f"{work_id} not offered {times} times"
            for message in self.unpacker:
                if message[0] == 2:
                    self.events.extend(message[2])
            if count() < times:
                self._receive()

    def close(self) -> None:
        self.sock.close()


class Stack:
    """acwd and Prometheus, both on loopback."""

    def __init__(self, tmp: Path) -> None:
        self.prometheus_bin, self.promtool = tools()
        self.tmp = tmp
        self.metrics_port = free_port()
        config = tmp / "acwd.toml"
        config.write_text(
            ACWD_CONFIG.format(metrics_port=self.metrics_port, journal=tmp / "acwd.db")
        )
        self.acwd_log = tmp / "acwd.log"
        command = [sys.executable, "-m", "acwd.cli", "serve", "--config", str(config)]
        with self.acwd_log.open("wb") as log:
            self.acwd = subprocess.Popen(
                [*command, "--port", "0", "--log-format", "json"],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        listening = eventually(self._listening, "acwd to listen")
        self.rpc_port = int(listening["rpc"].rsplit(":", 1)[1])
        self.metrics_url = listening["metrics"]

        self.prometheus_port = free_port()
        prometheus_config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {
                    "job_name": "acwd",
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.metrics_port}"]}],
                }
            ],
        }
        prometheus_yml = tmp / "prometheus.yml"  # JSON is YAML
        prometheus_yml.write_text(json.dumps(prometheus_config))
        self.prometheus_log = tmp / "prometheus.log"
        with self.prometheus_log.open("wb") as log:
            self.prometheus = subprocess.Popen(
                [
                    self.prometheus_bin,
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        eventually(self._ready, "Prometheus to be ready", timeout=60)

    def _listening(self) -> dict[str, Any] | None:
        assert self.acwd.poll() is None, "acwd exited:\n" + self.acwd_log.read_text()
        for line in self.acwd_log.read_text().splitlines():
            if line.startswith("{"):
                entry: dict[str, Any] = json.loads(line)
                if entry.get("event") == "acwd listening":
                    return entry
        return None

    def _ready(self) -> bool:
        assert self.prometheus.poll() is None, (
            "prometheus exited:\n" + self.prometheus_log.read_text()
        )
        with urllib.request.urlopen(f"{self.api_base}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET a Prometheus API path; an error status is returned, not raised."""
        url = f"{self.api_base}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("/api/v1/query", query=expr)

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> int | None:
        self.prometheus.send_signal(signal.SIGTERM)
        self.acwd.send_signal(signal.SIGTERM)
        try:
            self.prometheus.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.prometheus.kill()
        try:
            return self.acwd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.acwd.kill()
            return None


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("prometheus"))
    try:
        yield running
    finally:
        status = running.stop()
    assert status == 0, running.acwd_log.read_text()[-4000:]


def traffic(rpc: Rpc, round_: int) -> None:
    """Every offer outcome but refusal, ACW extended, completed and timed out, cancellations,
    failed requests and pings; one item is left waiting."""
    w = f"r{round_}"
    if round_ > 1:  # the item the previous round left waiting goes before anyone takes it
        rpc.call("work.cancel", work_id=f"r{round_ - 1}-4", reason="customer hung up")
    for agent in ("a1", "a2"):
        rpc.call("agent.login", agent_id=agent, queues=["default", "sales"])
    rpc.call("work.submit", work_id=f"{w}-1", queue="default")
    rpc.offered(f"{w}-1", 1)
    rpc.call("work.decline", work_id=f"{w}-1")
    rpc.offered(f"{w}-1", 2)  # then it times out (0.5 s) and is offered again
    rpc.offered(f"{w}-1", 3)
    rpc.call("work.accept", work_id=f"{w}-1")
    rpc.call("work.end", work_id=f"{w}-1")
    rpc.call("acw.extend", work_id=f"{w}-1")
    rpc.call("acw.complete", work_id=f"{w}-1", disposition="resolved")

    rpc.call("work.submit", work_id=f"{w}-2", queue="sales")
    rpc.offered(f"{w}-2", 1)
    rpc.call("work.accept", work_id=f"{w}-2")
    rpc.call("work.end", work_id=f"{w}-2")
    eventually(lambda: rpc.call("work.get", work_id=f"{w}-2")["state"] == "completed", "ACW end")

    for agent in ("a1", "a2"):
        rpc.call("agent.set_status", agent_id=agent, status="away")
    rpc.call("work.submit", work_id=f"{w}-3", queue="default")
    rpc.call("work.cancel", work_id=f"{w}-3", reason="abandoned")
    rpc.call("work.submit", work_id=f"{w}-4", queue="sales")
    assert rpc.fails("work.get", work_id="no-such-item") == "not_found"
    assert rpc.fails("no.such.method") == "method_not_found"
    ids = [rpc.send("ping") for _ in range(20)]  # pipelined
    for msgid in ids:
        assert rpc.reply(msgid)[0] is None


@pytest.fixture(scope="module")
def scraped(stack: Stack) -> Stack:
    """Two rounds of traffic, each seen by Prometheus before the next; then rules evaluated."""
    eventually(lambda: stack.scalar('up{job="acwd"}') == 1, "the first scrape")
    rpc = Rpc(stack.rpc_port)
    try:
        for round_ in (1, 2):
            traffic(rpc, round_)
            submitted = 4 * round_
            eventually(
                lambda n=submitted: stack.scalar("sum(acwd_work_submitted_total)") == n,
                f"Prometheus to see round {round_}",
            )
        time.sleep(2.5)  # two more scrapes and rule evaluations
    finally:
        rpc.close()
    return stack


def test_listen_line_gives_the_metrics_address(stack: Stack) -> None:
    assert stack.metrics_url == f"http://127.0.0.1:{stack.metrics_port}/metrics"
    with urllib.request.urlopen(stack.metrics_url, timeout=5) as response:
        assert b"acwd_agents" in response.read()


def substitute(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
        expr = expr.replace("${" + name[1:] + "}", VARIABLES[name])
    return expr


def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((f"{panel['title']} / {target['refId']}", target["expr"]))
    return out


def finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


def test_every_dashboard_expression_returns_data(scraped: Stack) -> None:
    targets = dashboard_targets()
    assert len(targets) > 30
    problems = []
    for where, expr in targets:
        answer = scraped.query(substitute(expr))
        if answer["status"] != "success":
            problems.append(f"{where}: {answer.get('error')}\n    {expr}")
        elif not finite(answer["data"]["result"]):
            problems.append(f"{where}: no finite sample: {answer['data']['result']}\n    {expr}")
    assert not problems, "\n".join(problems)


def test_dashboard_variables_find_their_values(scraped: Stack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
        assert found, variable["definition"]
        selector, label = substitute(found[1]), found[2]
        answer = scraped.api("/api/v1/series", **{"match[]": selector})
        assert answer["status"] == "success", answer
        values = {series[label] for series in answer["data"]}
        assert values, f"variable {variable['name']}: no series for {selector}"
        if variable["name"] == "queue":
            assert values == {"default", "sales"}


# -- alert rules -------------------------------------------------------------------------------

_MODIFIERS = re.compile(
    r"^\s*(bool\b)?\s*((on|ignoring)\s*\([^)]*\))?\s*((group_left|group_right)\s*(\([^)]*\))?)?"
)
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _split(expr: str, operators: tuple[str, ...], words: bool) -> list[str]:
    """Split ``expr`` at top-level occurrences of ``operators`` (outside brackets and strings)."""
    parts, depth, quote, start, i = [], 0, "", 0, 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for op in operators:
                if not expr.startswith(op, i):
                    continue
                if words and (
                    (i > 0 and (expr[i - 1].isalnum() or expr[i - 1] == "_"))
                    or (i + len(op) < len(expr) and (expr[i + len(op)].isalnum()))
                ):
                    continue
                parts.append(expr[start:i])
                i += len(op)
                start = i
                break
            else:
                i += 1
                continue
            continue
        i += 1
    parts.append(expr[start:])
    return parts


def operands(expr: str) -> list[str]:
    """The non-numeric sides of an expression's top-level set operators and comparisons."""
    out = []
    for part in _split(expr, ("and", "unless", "or"), words=True):
        for side in _split(part, ("==", "!=", ">=", "<=", ">", "<"), words=False):
            side = " ".join(_MODIFIERS.sub("", side, count=1).split())
            if side and not _NUMBER.fullmatch(side):
                out.append(side)
    return out


def test_operand_splitter() -> None:
    assert operands('up{job="acwd"} == 0') == ['up{job="acwd"}']
    assert operands("a > on(queue) group_left 2 * b + 60") == ["a", "2 * b + 60"]
    assert operands('x{a!="b",c=~"d|e"} / y > 0.2 and z >= bool 5') == [
        'x{a!="b",c=~"d|e"} / y',
        "z",
    ]
    assert operands("sum by (le) (rate(h[5m])) > 1e-3") == ["sum by (le) (rate(h[5m]))"]


def test_every_alert_rule_evaluates_and_its_operands_return_data(scraped: Stack) -> None:
    expected = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), flags=re.M))
    assert len(expected) >= 6
    answer = scraped.api("/api/v1/rules")
    assert answer["status"] == "success", answer
    rules = [rule for group in answer["data"]["groups"] for rule in group["rules"]]
    assert {rule["name"] for rule in rules} == expected
    problems = []
    for rule in rules:
        name, expr = rule["name"], rule["query"]
        if rule["health"] != "ok" or rule.get("lastError"):
            problems.append(f"{name}: health {rule['health']}: {rule.get('lastError')}")
        if rule["lastEvaluation"].startswith("0001-"):
            problems.append(f"{name}: never evaluated")
        whole = scraped.query(expr)
        if whole["status"] != "success" or whole["data"]["resultType"] != "vector":
            problems.append(f"{name}: {whole}")
        for operand in operands(expr):
            result = scraped.query(operand)
            if result["status"] != "success":
                problems.append(f"{name}: operand {operand}: {result.get('error')}")
            elif operand in MAY_BE_EMPTY:
                continue
            elif not finite(result["data"]["result"]):
                problems.append(f"{name}: operand has no finite sample: {operand}")
    assert not problems, "\n".join(problems)
    # Nothing is wrong in this run, so no alert may be firing.
    alerts = scraped.api("/api/v1/alerts")["data"]["alerts"]
    assert [a for a in alerts if a["state"] == "firing"] == []

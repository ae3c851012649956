"""The deploy/ kit: Prometheus config and rules pass promtool (with the rule unit tests), the
dashboard and rules use only metrics acwd exposes, the example config is valid, the systemd unit
verifies. promtool is required when ``ACWD_REQUIRE_PROMETHEUS=1`` (CI); else those tests skip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from acwd.cli import main
from acwd.core.config import Settings
from acwd.metrics import Metrics
from acwd.runtime.node import Node

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "acwd-dashboard.json"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("ACWD_REQUIRE_PROMETHEUS") == "1":
            pytest.fail(f"{reason}, and ACWD_REQUIRE_PROMETHEUS=1 requires it")
        pytest.skip(reason)
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "acwd-alerts.yml"],
        ["test", "rules", "acwd-alerts.test.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool(args: list[str]) -> None:
    done = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_rule_unit_tests_cover_every_alert() -> None:
    alerts = set(
        re.findall(r"^\s*- alert: (\w+)$", (PROMETHEUS / "acwd-alerts.yml").read_text(), re.M)
    )
    tests = (PROMETHEUS / "acwd-alerts.test.yml").read_text()
    tested = set(re.findall(r"alertname: (\w+)", tests))
    assert alerts and alerts == tested


def exposed_names() -> set[str]:
    """Every sample name acwd exposes (label sets pre-created for the configured queues)."""
    node = Node(Settings.from_dict({"journal": {"path": ":memory:"}}))
    metrics = Metrics(node, CollectorRegistry())
    text = metrics.exposition()[0].decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    # Families computed at scrape time from a running node, and per-label series created on use:
    families = {f.name for f in text_string_to_metric_families(text)}
    names |= {f + end for f in families for end in ("", "_total", "_bucket", "_sum", "_count")}
    return names


def test_dashboard_and_rules_use_only_exposed_metrics() -> None:
    names = exposed_names()
    used = set(re.findall(r"\bacwd_[a-z_]+", DASHBOARD.read_text()))
    used |= set(re.findall(r"\bacwd_[a-z_]+", (PROMETHEUS / "acwd-alerts.yml").read_text()))
    assert used
    assert not used - names, f"not exposed: {sorted(used - names)}"


def test_dashboard_structure() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "instance", "queue"} <= variables
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for subject in ("agents by state", "queue depth", "oldest wait", "service level", "asa"):
        assert subject in titles
    for subject in ("acw", "handle", "offer outcomes", "routing latency", "timer lateness"):
        assert subject in titles
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"]


def test_example_config_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(DEPLOY / "acwd.example.toml")]) == 0
    out = capsys.readouterr().out
    assert "metrics   http://0.0.0.0:9400/metrics" in out
    assert "auth      on" in out


def test_systemd_unit(tmp_path: Path) -> None:
    unit = (DEPLOY / "acwd.service").read_text()
    for directive in (
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=acwd",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ):
        assert directive in unit.splitlines(), directive
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the directives above are what we can check without systemd's own tools
    acwd = str(Path(sys.executable).parent / "acwd")
    path = tmp_path / "acwd.service"
    path.write_text(unit.replace("/opt/acwd/bin/acwd", acwd))
    done = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in done.stderr.splitlines() if path.name in line]
    assert done.returncode == 0 and not complaints, done.stderr


def test_container_file() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    assert "COPY deploy/acwd.example.toml /etc/acwd/acwd.toml" in text
    assert re.search(r'^ENTRYPOINT \["/opt/acwd/bin/acwd", "serve"', text, re.M)
    assert re.search(r"^USER \d+", text, re.M)  # never root
    assert 'VOLUME ["/var/lib/acwd"]' in text

"""The Prometheus files shipped in deploy/prometheus/ are valid, and every alert fires and resolves.

promtool (Debian's `prometheus` package; `make test` installs it as it installs Chromium) checks
the rule file and the example config, and runs relay-lead.rules.test.yml: synthetic series of the
lead's metrics under which each alert must fire and then resolve. That the rules use the metric
names the lead really exposes is checked in tests/test_lead_alerts.py, on a real scrape.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def _run(tool: str, *args: str) -> str:
    path = shutil.which(tool)
    if path is None:
        package = "prometheus" if tool == "promtool" else "prometheus-alertmanager"
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {package})")
    done = subprocess.run(
        [path, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_rules_are_valid() -> None:
    assert "SUCCESS: 8 rules found" in _run("promtool", "check", "rules", "relay-lead.rules.yml")


def test_every_alert_fires_and_resolves() -> None:
    assert "SUCCESS" in _run("promtool", "test", "rules", "relay-lead.rules.test.yml")


def test_every_alert_is_tested() -> None:
    rules = (PROMETHEUS / "relay-lead.rules.yml").read_text(encoding="utf-8")
    tests = (PROMETHEUS / "relay-lead.rules.test.yml").read_text(encoding="utf-8")
    alerts = {line.split(":")[1].strip() for line in rules.splitlines() if "- alert:" in line}
    tested = {line.split(":")[1].strip() for line in tests.splitlines() if "alertname:" in line}
    assert alerts == tested


def test_example_prometheus_config_is_valid() -> None:
    assert "is valid prometheus config" in _run("promtool", "check", "config", "prometheus.yml")


def test_example_alertmanager_config_is_valid() -> None:
    assert "SUCCESS" in _run("amtool", "check-config", "alertmanager.yml")

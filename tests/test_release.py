"""What an operator packaging a release relies on (issue 19): the license, the distribution name,
a Docker build context without data or virtualenvs, a compose file the compose spec accepts, and
`relay_build_info` on both programs' /metrics."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
import yaml

from relay import __version__
from tests.test_lead_data import ThreadedLead
from tests.test_openapi_conformance import running_relay

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
COMPOSE = ROOT / "deploy" / "compose.yaml"
BUILD_INFO = f'relay_build_info{{version="{__version__}"}} 1.0'


def test_license_is_the_one_pyproject_declares() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert re.match(r"\s*Apache License\s+Version 2\.0, January 2004\s", text)
    assert "END OF TERMS AND CONDITIONS" in text
    openapi = yaml.safe_load((ROOT / "openapi.yaml").read_text(encoding="utf-8"))
    assert openapi["info"]["license"]["identifier"] == project["license"]


def test_distribution_name_is_free_and_the_command_stays_relay() -> None:
    """`relay` is someone else's distribution on PyPI; ours is telemetry-relay, installed here
    with the `relay` command and the `relay` import package, at relay.__version__."""
    project = PYPROJECT["project"]
    assert project["name"] == "telemetry-relay"
    assert project["scripts"] == {"relay": "relay.cli:main"}
    assert metadata.version("telemetry-relay") == __version__
    entry_points = metadata.distribution("telemetry-relay").entry_points
    assert [(e.name, e.value) for e in entry_points if e.group == "console_scripts"] == [
        ("relay", "relay.cli:main")
    ]


# -- the Docker build context ---------------------------------------------------------------------


def _dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    """(negated, pattern) per line, with Docker's matching: `*` and `?` within one path
    element, `**` across any number of them, a trailing `/` ignored."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
                token, re.escape(token)
            )
        rules.append((negated, re.compile(regex)))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether `path` stays out of the context: the last rule matching it or a parent decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _what_relay_serve_creates(cwd: Path) -> list[str]:
    """Run `relay serve` as `make run` does (no configuration, in the checkout), until it
    answers; return every path it left, relative to `cwd`."""
    port = _free_port()
    env = {
        **os.environ,
        "RELAY_LISTEN__PORT": str(port),
        "RELAY_METRICS__LISTEN__PORT": str(_free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "relay serve failed"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return sorted(str(p.relative_to(cwd)) for p in cwd.rglob("*"))


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match is not None, name
    return match.group(1)


def test_build_context_excludes_what_make_run_creates(tmp_path: Path) -> None:
    rules = _dockerignore()
    created = _what_relay_serve_creates(tmp_path)
    assert "relay-data/operator.key" in created
    # make's own: the virtualenv and the npm tools, and what git and the test tools keep.
    made = [
        f"{_makefile_variable('VENV')}/bin/python",
        f"{_makefile_variable('TOOLS')}/node_modules/.bin/redocly",
        ".git/config",
        ".pytest_cache/README.md",
        "relay/__pycache__/cli.cpython-311.pyc",
        "relay/lead/__pycache__/api.cpython-311.pyc",
        "relay-demo/lead.yaml",
    ]
    assert [path for path in created + made if not excluded(path, rules)] == []


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    rules = _dockerignore()
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    sources = [
        source
        for line in re.findall(r"^COPY\s+(.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    ]
    assert sources == ["pyproject.toml", "README.md", "LICENSE", "relay"]
    files = [str(p.relative_to(ROOT)) for s in sources for p in [ROOT / s, *(ROOT / s).rglob("*")]]
    kept = [f for f in files if "__pycache__" not in f]
    assert [f for f in kept if excluded(f, rules)] == []
    assert "relay/lead/static/dashboard.js" in kept


def test_base_image_is_pinned_to_a_debian_release() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.MULTILINE)
    assert re.fullmatch(r"python:3\.11-slim-(bookworm|trixie)(@sha256:[0-9a-f]{64})?", base), base


# -- compose --------------------------------------------------------------------------------------


def _compose_spec() -> dict[str, Any]:
    """The compose-spec JSON Schema as check-jsonschema (a pinned dev dependency) vendors it."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text())
    return schema


def _compose_errors(compose: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(_compose_spec())
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]


def test_compose_file_follows_the_compose_spec() -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert _compose_errors(compose) == []
    # The schema is not vacuous: a wrong restart policy and an unknown key are errors.
    compose["services"]["relay"]["restart"] = "sometimes"
    compose["services"]["relay"]["healthcheck"]["intervall"] = "5s"
    assert len(_compose_errors(compose)) == 2


def test_compose_services_restart_and_report_their_health() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"kibana-password"}
    for name, service in services.items():
        if name in one_shot:
            continue
        assert service.get("restart") == "unless-stopped", name
        assert "healthcheck" in service, name
    (lead,) = [s for s in services.values() if s.get("command") == ["lead"]]
    assert "8788/readyz" in " ".join(lead["healthcheck"]["test"])


# -- relay_build_info -----------------------------------------------------------------------------


@pytest.mark.slow
def test_build_info_on_the_operator_listener_and_the_lead(tmp_path: Path) -> None:
    with running_relay(tmp_path / "relay") as relay:
        operator = requests.get(relay.operator_base_url + "/metrics", timeout=10).text
        public = requests.get(relay.base_url + "/metrics", timeout=10)
    assert BUILD_INFO in operator.splitlines()
    assert public.status_code == 404  # P9: the public listener serves no metrics
    (tmp_path / "lead").mkdir()
    with ThreadedLead(tmp_path / "lead") as lead:
        body = requests.get(lead.base_url + "/metrics", timeout=10).text
    assert BUILD_INFO in body.splitlines()

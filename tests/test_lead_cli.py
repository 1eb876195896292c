"""`relay lead` as a command: it verifies, serves, prints its URL and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.test_lead_data import ORIGIN_A, build_store

RELAY = [sys.executable, "-m", "relay"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_without_a_store_it_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "RELAY_DATA_DIR": str(tmp_path / "nothing-here")}
    done = subprocess.run([*RELAY, "lead"], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "no embedded store" in done.stderr and "relay serve" in done.stderr


async def test_serves_the_verified_store_and_stops_on_sigterm(tmp_path: Path) -> None:
    settings = await build_store(tmp_path)
    port = _free_port()
    env = {
        **os.environ,
        "RELAY_DATA_DIR": str(settings.data_dir),
        "RELAY_LEAD__REGISTRY": str(tmp_path / "registry.yaml"),
        "RELAY_LEAD__LISTEN__PORT": str(port),
    }
    lead = subprocess.Popen([*RELAY, "lead"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert lead.stdout is not None
        assert lead.stdout.readline().strip() == f"dashboard: http://127.0.0.1:{port}/dashboard"
        answer = requests.get(f"http://127.0.0.1:{port}/v1/operators", timeout=10).json()
        assert answer["operators"][0]["origin"] == ORIGIN_A
        assert answer["verification"]["batches_verified"] == 4
    finally:
        lead.send_signal(signal.SIGTERM)
        assert lead.wait(timeout=15) == 0

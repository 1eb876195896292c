"""The peer comparison: Etsy's StatsD (npm `statsd`) against relay, fed the same observations.

StatsD gets timers over UDP (`relay.ttfb.<node>:<ms>|ms`, many per datagram, as statsd clients
batch them); relay gets the same observations as native events over HTTP, 50 per request. Each
server's CPU seconds (from /proc) per million observations are compared in the same run. StatsD
does less (no validation, no privacy, no durability), so this is a cost of doing the job properly,
not a like-for-like race.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

__all__ = ["compare_with_statsd"]

STATSD_VERSION = "0.9.0"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "relay-bench"


def _install_statsd() -> Path | None:
    target = _CACHE / f"statsd-{STATSD_VERSION}"
    entry = target / "node_modules" / "statsd" / "bin" / "statsd"
    if entry.exists():
        return entry
    if not (shutil.which("npm") and shutil.which("node")):
        return None
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "npm",
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            str(target),
            f"statsd@{STATSD_VERSION}",
        ],
        check=True,
        capture_output=True,
    )
    return entry if entry.exists() else None


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_idle(pid: int, settle: float = 0.5) -> None:
    last = _cpu_seconds(pid)
    while True:
        time.sleep(settle)
        now = _cpu_seconds(pid)
        if now - last < 0.01:
            return
        last = now


def _statsd_received(mgmt_port: int) -> int:
    with socket.create_connection(("127.0.0.1", mgmt_port), timeout=5) as sock:
        sock.sendall(b"counters\n")
        data = b""
        while b"END" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    match = re.search(rb"'statsd\.metrics_received':\s*(\d+)", data)
    return int(match.group(1)) if match else -1


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_statsd(entry: Path, root: Path, observations: int) -> dict[str, Any]:
    port, mgmt = _free_port(socket.SOCK_DGRAM), _free_port()
    config = root / "statsd.json"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "mgmt_port": mgmt,
                "backends": [],
                "flushInterval": 3_600_000,
                "address": "127.0.0.1",
            }
        )
    )
    proc = subprocess.Popen(
        ["taskset", "-c", "0", "node", str(entry), str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.5)
        before = _cpu_seconds(proc.pid)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        lines = [f"relay.ttfb.d{n % 40}:{(n * 37) % 900 + 20}|ms".encode() for n in range(1000)]
        sent = packets = 0
        while sent < observations:
            packet = b"\n".join(lines[sent % 1000 : sent % 1000 + 40])
            sock.sendto(packet, ("127.0.0.1", port))
            sent += packet.count(b"\n") + 1
            packets += 1
            if packets % 25 == 0:
                # At most ~100k observations/s: a flooded UDP socket drops datagrams, and
                # dropped work would flatter statsd's CPU figure.
                time.sleep(0.01)
        _wait_idle(proc.pid)
        cpu = _cpu_seconds(proc.pid) - before
        received = _statsd_received(mgmt)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "observations_sent": sent,
        "observations_received": received,
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_per_million": round(cpu / max(received, 1) * 1e6, 3),
    }


async def _post_all(port: int, bodies: list[bytes]) -> int:
    url = f"http://127.0.0.1:{port}/v1/events"
    accepted = 0
    queue = list(bodies)
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal accepted
            while queue:
                body = queue.pop()
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as resp:
                    accepted += orjson.loads(await resp.read()).get("accepted", 0)

        await asyncio.gather(*(worker() for _ in range(32)))
    return accepted


def _run_relay(root: Path, bodies: list[bytes]) -> dict[str, Any]:
    port = _free_port()
    env = {
        **os.environ,
        "RELAY_DATA_DIR": str(root / "data-statsd"),
        "RELAY_LISTEN__PORT": str(port),
        "RELAY_METRICS__LISTEN__PORT": "0",  # not scraped; 9787 may be taken
        "RELAY_ORIGIN": "bench.relay/statsd",
        "RELAY_LOG__LEVEL": "warning",
        "RELAY_INGEST__RATE_LIMIT__ENABLED": "false",
    }
    proc = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "relay", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        before = _cpu_seconds(proc.pid)
        accepted = asyncio.run(_post_all(port, bodies))
        _wait_idle(proc.pid, 0.3)
        cpu = _cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "observations_accepted": accepted,
        "cpu_seconds": round(cpu, 3),
        "cpu_seconds_per_million": round(cpu / max(accepted, 1) * 1e6, 3),
    }


def compare_with_statsd(
    root: Path, make_bodies: Callable[[int], list[bytes]], observations: int
) -> dict[str, Any]:
    if not shutil.which("taskset"):
        return {"skipped": "taskset not available"}
    try:
        entry = _install_statsd()
    except subprocess.CalledProcessError as exc:
        return {"skipped": f"npm install statsd@{STATSD_VERSION} failed: {exc.stderr[-300:]!r}"}
    if entry is None:
        return {"skipped": "node/npm not available"}
    statsd = _run_statsd(entry, root, observations)
    relay = _run_relay(root, make_bodies(observations // 50))
    return {
        "statsd_version": STATSD_VERSION,
        "statsd": statsd,
        "relay": relay,
        "relay_cost_vs_statsd": round(
            relay["cpu_seconds_per_million"] / max(statsd["cpu_seconds_per_million"], 1e-9), 2
        ),
    }

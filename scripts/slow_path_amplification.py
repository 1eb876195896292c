"""Measure what one body built to miss the fast decoder costs `relay serve` (issue 12, finding 5).

    .venv/bin/python scripts/slow_path_amplification.py [--seconds 10] [--attacks 167]

Starts `relay serve` (defaults, a temporary data_dir, free ports) and sends Atlas bodies of
~1 MB: one event the fast (msgspec) decoder rejects, one with ~1 MB of nested arrays in an
unknown field. First alone, one after the other: the relay's CPU time per request (from
/proc/<pid>/stat; on one event loop that is the loop time it took, and unlike the answer time it
does not depend on what else runs on the machine). Then, for `--seconds`, `--attacks` such requests
spread evenly, while a probe sends a small valid request every 50 ms and records its latency:
what every other client sees. To measure another tree (say, the commit before the fix), run
with PYTHONPATH pointing at it; the child inherits the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

UNIT = b"[" * 200 + b"]" * 200
JUNK = b"[" + b",".join([UNIT] * (1_000_000 // len(UNIT))) + b"]"
ATTACK = b'{"events":[{"type":5},{"type":"playback-is-slow","junk":' + JUNK + b"}]}"
# The same bytes without the event that misses the fast decoder: what the fast path costs.
FAST = b'{"events":[{"type":"playback-is-slow","junk":' + JUNK + b"}]}"
PROBE = orjson.dumps({"events": [{"type": "playback-is-slow", "distributorId": "1"}]})
HEADERS = {"Content-Type": "application/json"}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_ready(http: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(base + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("relay serve did not start")


async def _post(http: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    async with http.post(url, data=body, headers=HEADERS) as resp:
        await resp.read()
        return resp.status, (time.perf_counter() - started) * 1000


async def _measure(base: str, pid: int, seconds: float, attacks: int) -> None:
    url = base + "/v1/atlas/events"
    async with aiohttp.ClientSession() as http:
        await _wait_ready(http, base)
        for name, body in (("attack", ATTACK), ("fast-path", FAST)):
            alone = []
            cpu_before = _cpu_seconds(pid)
            for _ in range(30):
                status, ms = await _post(http, url, body)
                assert status == 202, status
                alone.append(ms)
            cpu_ms = (_cpu_seconds(pid) - cpu_before) / len(alone) * 1000
            print(
                f"{name} body {len(body)} bytes, alone: relay CPU {cpu_ms:.1f} ms per request, "
                f"answer time median {statistics.median(alone):.1f} ms"
            )
        baseline = [(await _post(http, url, PROBE))[1] for _ in range(40)]
        print(f"probe alone: median {statistics.median(baseline):.1f} ms")

        probe_ms: list[float] = []
        statuses: dict[int, int] = {}

        async def attacker() -> None:
            async with aiohttp.ClientSession() as own:
                for _ in range(attacks):
                    status, _ = await _post(own, url, ATTACK)
                    statuses[status] = statuses.get(status, 0) + 1
                    await asyncio.sleep(seconds / attacks)

        async def probe() -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                probe_ms.append((await _post(http, url, PROBE))[1])
                await asyncio.sleep(0.05)

        await asyncio.gather(attacker(), probe())
        probe_ms.sort()
        print(
            f"under {attacks} attack requests in {seconds:.0f} s (answers {statuses}): probe "
            f"p50 {probe_ms[len(probe_ms) // 2]:.1f} ms, p99 "
            f"{probe_ms[int(len(probe_ms) * 0.99)]:.1f} ms, max {probe_ms[-1]:.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--attacks", type=int, default=167)
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="relay-amplification-") as tmp:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RELAY_")},
            "RELAY_DATA_DIR": str(Path(tmp) / "data"),
            "RELAY_LISTEN__PORT": str(port),
            "RELAY_METRICS__LISTEN__PORT": "0",
            "RELAY_LOG__LEVEL": "warning",
        }
        # cwd: `python -m` puts the working directory first on sys.path, before PYTHONPATH.
        process = subprocess.Popen([sys.executable, "-m", "relay", "serve"], env=env, cwd=tmp)
        try:
            asyncio.run(
                _measure(f"http://127.0.0.1:{port}", process.pid, args.seconds, args.attacks)
            )
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()

"""GET /v1/proof/consistency on a real operator relay (DESIGN §5.5, RFC 9162 §2.1.4).

Every proof the relay serves is checked with the RFC's verification algorithm against the roots of
the checkpoints it signed at both sizes; the algorithm itself is checked against the RFC 6962 /
transparency-dev vectors in test_attest_merkle.py.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest

from relay.attest.checkpoint import Checkpoint, open_checkpoint
from relay.attest.merkle import verify_consistency
from tests.conftest import RunningRelay
from tests.verify_support import run_windows

StartRelay = Callable[..., Any]


async def operator_view(running: RunningRelay) -> dict[str, Any]:
    async with running.http.get(running.url("/v1/operator")) as resp:
        assert resp.status == 200
        view: dict[str, Any] = await resp.json()
    return view


async def current(running: RunningRelay) -> Checkpoint:
    note = (await operator_view(running))["checkpoint"]
    return open_checkpoint(note, running.relay.sealer.key.verifier)


async def get_proof(running: RunningRelay, query: str) -> tuple[int, Any]:
    async with running.http.get(running.url(f"/v1/proof/consistency?{query}")) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_consistency_proofs_link_the_relays_checkpoints(start_relay: StartRelay) -> None:
    running: RunningRelay = await start_relay()
    status, answer = await get_proof(running, "old=0&new=0")
    assert (status, answer) == (200, {"old": 0, "new": 0, "proof": []})
    checkpoints = {}
    for _ in range(5):
        await run_windows(running, 1)
        cp = await current(running)
        checkpoints[cp.size] = cp
    for old in range(1, 6):
        for new in range(old, 6):
            status, answer = await get_proof(running, f"old={old}&new={new}")
            assert status == 200 and (answer["old"], answer["new"]) == (old, new)
            proof = [base64.b64decode(h) for h in answer["proof"]]
            assert (proof == []) == (old == new)
            o, n = checkpoints[old], checkpoints[new]
            assert verify_consistency(old, new, o.root, n.root, proof)
    status, answer = await get_proof(running, "old=0&new=5")
    assert (status, answer["proof"]) == (200, [])


@pytest.mark.parametrize(
    "query",
    [
        "",
        "old=1",
        "new=1",
        "old=2&new=1",
        "old=0&new=3",
        "old=-1&new=1",
        "old=01&new=1",
        "old=a&new=1",
        "old=1&new=99999999999999999999",
    ],
)
async def test_bad_proof_requests_get_a_problem(start_relay: StartRelay, query: str) -> None:
    running: RunningRelay = await start_relay()
    await run_windows(running, 2)
    status, answer = await get_proof(running, query)
    assert status == 400
    assert answer["type"].endswith("bad-proof-request")


async def test_a_relay_without_recorded_leaves_says_so(start_relay: StartRelay) -> None:
    # An outbox from before the leaves were kept: the rows are simply not there.
    running: RunningRelay = await start_relay()
    await run_windows(running, 2)
    running.relay.outbox._db.execute("DELETE FROM log_leaves WHERE seq = 0")
    status, answer = await get_proof(running, "old=1&new=2")
    assert status == 404 and answer["type"].endswith("proof-unavailable")

from __future__ import annotations

from tests.conftest import RunningRelay, from_network, request_event


async def test_accepts_and_seals(relay_server: RunningRelay) -> None:
    for i in range(3):  # k = 3 contributors from as many networks
        status, body = await relay_server.post(
            "/v1/events", {"events": [request_event(client=f"c{i}")]}, headers=from_network(i)
        )
        assert status == 202
        assert body == {"accepted": 1, "rejected": 0, "errors": []}
    assert await relay_server.seal_after(70) == 1
    docs = list(relay_server.relay.outbox.oldest()[1])  # type: ignore[index]
    assert docs[0].source["n"] == 1

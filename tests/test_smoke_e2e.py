from __future__ import annotations

from tests.conftest import RunningRelay, request_event


async def test_accepts_and_seals(relay_server: RunningRelay) -> None:
    status, body = await relay_server.post(
        "/v1/events", {"events": [request_event(client=f"c{i}") for i in range(3)]}
    )
    assert status == 202
    assert body == {"accepted": 3, "rejected": 0, "errors": []}
    assert await relay_server.seal_after(70) == 1
    docs = list(relay_server.relay.outbox.oldest()[1])  # type: ignore[index]
    assert docs[0].source["n"] == 1

"""The ceiling: an aiohttp + orjson server that only parses the body (DESIGN §10).

`python -m relay.bench.ceiling PORT` — same event loop (uvloop), same HTTP stack, same JSON
parser as relay; whatever relay does beyond this is the cost of its pipeline.
"""

from __future__ import annotations

import sys

import orjson
import uvloop
from aiohttp import web


async def _events(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    return web.json_response({"accepted": len(payload["events"])}, status=202)


def main() -> None:
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/atlas/events", _events)
    app.router.add_post("/v1/events", _events)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()

"""`GET /v1/client.js`: the browser client (docs/integrators.md "Browser client"), read once
from the package.

Its ETag is its Subresource Integrity value (`sha384-…`), so the header a page sees is the
`integrity` attribute it pins, and a poll with `If-None-Match` answers 304 until the relay ships
a new client.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources

from relay.core.b64 import b64encode

__all__ = ["ClientScript"]

_VERSION = re.compile(rb'export const VERSION = "([0-9]+\.[0-9]+\.[0-9]+)";')


class ClientScript:
    """The client's bytes, version and integrity value, computed once at start."""

    def __init__(self) -> None:
        body = resources.files("relay.ingest").joinpath("static", "client.js").read_bytes()
        match = _VERSION.search(body)
        if match is None:
            raise ValueError("client.js declares no VERSION")
        self.body = body
        self.version = match.group(1).decode("ascii")
        digest = hashlib.sha384(body).digest()
        self.integrity = "sha384-" + b64encode(digest)
        self.headers = {
            "ETag": f'"{self.integrity}"',
            "Cache-Control": "public, max-age=3600",
            "X-Relay-Client-Version": self.version,
            "X-Content-Type-Options": "nosniff",
            # Loadable by pages that isolate themselves (Cross-Origin-Embedder-Policy).
            "Cross-Origin-Resource-Policy": "cross-origin",
        }

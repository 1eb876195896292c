"""Reading a request body within limits: content type, encoding, size after decompression."""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from relay.core.problem import Problem

__all__ = ["read_body"]

_JSON_TYPES = frozenset({"application/json", "text/plain"})  # text/plain: navigator.sendBeacon
_CHUNK = 64 * 1024


async def read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The decompressed body; Problem 415/413/408/400 when it cannot be had within limits."""
    content_type = request.content_type  # parsed, lower-cased, without parameters
    if content_type not in _JSON_TYPES:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported content type",
            "send application/json (or text/plain from navigator.sendBeacon)",
        )
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise Problem(
            415,
            "unsupported-encoding",
            "Unsupported content encoding",
            "send the body uncompressed or with Content-Encoding: gzip",
        )
    if request.content_length is not None and request.content_length > limit:
        raise Problem(
            413, "body-too-large", "Request body too large", f"the limit is {limit} bytes"
        )
    try:
        async with asyncio.timeout(timeout):
            raw = await _read_limited(request, limit)
    except TimeoutError:
        raise Problem(408, "body-timeout", "Request body not received in time") from None
    if encoding == "identity":
        return raw
    return _gunzip(raw, limit)


async def _read_limited(request: web.Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise Problem(
                413, "body-too-large", "Request body too large", f"the limit is {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(data: bytes, limit: int) -> bytes:
    # Decompress at most limit + 1 bytes: a gzip bomb is refused after `limit`, not after RAM.
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise Problem(400, "bad-gzip", "Body is not valid gzip") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise Problem(
            413,
            "body-too-large",
            "Decompressed body too large",
            f"the limit is {limit} bytes after decompression",
        )
    if not inflater.eof:
        raise Problem(400, "bad-gzip", "Body is not valid gzip", "the gzip stream is truncated")
    if inflater.unused_data:
        # Bytes the body carries but nobody reads. A second gzip member is refused too: no
        # client that sends gzip (CompressionStream, fetch libraries) writes one.
        raise Problem(
            400, "bad-gzip", "Body is not valid gzip", "bytes follow the end of the gzip stream"
        )
    return out

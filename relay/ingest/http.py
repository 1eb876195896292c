"""The HTTP APIs of `relay serve` (DESIGN §2, §3; `openapi.yaml`): two apps on two listeners.

`create_app` is the public, app-facing one (ingest, client config, the operator view, `/healthz`
and a bare `/readyz`). `create_operator_app` is the operator's (`metrics.listen`, loopback by
default): `/metrics` and the detailed `/readyz`. Exact counts never reach the public port (P9).

Both depend on `IngestRelay` (relay/ingest/boundary.py), which `OperatorRelay` satisfies: the
ingest pipeline is `_Ingest`, the public reads `_Views`, each built from that interface alone.

Identifiers (IP, User-Agent, headers, the body's ids) are read inside `_Ingest._handle` and go no
further than `RequestContext`, which dies with the request (P1). Nothing here logs request content.
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import Field, with_config
from typing_extensions import TypedDict

from relay.aggregate.observation import IngestRecord
from relay.aggregate.window import window_start
from relay.attest.merkle import consistency_proof
from relay.core.b64 import b64encode
from relay.core.fields import Count, Hash64
from relay.core.problem import Problem, http_error_problem, problem_response
from relay.ingest.atlas import scrub_atlas
from relay.ingest.auth import Authenticator, AuthError, Credential
from relay.ingest.body import read_body
from relay.ingest.client_script import ClientScript
from relay.ingest.decode import Decoded, InvalidEvent, decode_atlas, decode_native, too_many_events
from relay.ingest.limits import RateLimiter
from relay.ingest.native import scrub_native
from relay.ingest.scrub import Admission, EventError, RequestContext, ScrubResult
from relay.privacy.contributor import network_material, source_network

if TYPE_CHECKING:
    from relay.config import IngestConfig
    from relay.ingest.boundary import IngestRelay, Readiness, Refusal

__all__ = [
    "AtlasIngestAnswer",
    "ConsistencyProof",
    "Health",
    "IngestAnswer",
    "ReadyStatus",
    "create_app",
    "create_operator_app",
    "runner_options",
]

_Event = TypeVar("_Event")
# An endpoint is a decoder and the scrub that takes what it decodes.
Decode = Callable[[bytes, int], Decoded[_Event]]  # (body, max_events)
Scrub = Callable[[Sequence[_Event | InvalidEvent], RequestContext, Admission], ScrubResult]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_RETRY_AFTER = {"Retry-After": "5"}
_ENDPOINTS = ("native", "atlas")
_SIZE_RE = re.compile(r"0|[1-9][0-9]*")


def _client_ip(
    request: web.Request, trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str:
    peer = request.remote or ""
    if not trusted:
        return peer
    chain = [peer]
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        chain = [hop.strip() for hop in forwarded.split(",")] + chain
    # Walk from the nearest hop back; the first address not ours is the client.
    for hop in reversed(chain):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return hop
        if not any(address in net for net in trusted):
            return hop
    return chain[0]


def _tree_size(request: web.Request, name: str) -> int:
    """A tree size query parameter: a decimal integer without sign or leading zeros, < 2^63."""
    text = request.query.get(name)
    if text is None or not _SIZE_RE.fullmatch(text) or len(text) > 19 or int(text) >= 1 << 63:
        raise Problem(
            400,
            "bad-proof-request",
            f"Query parameter {name!r} must be a tree size",
            "a decimal integer below 2^63, without sign or leading zeros",
        )
    return int(text)


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: "*" or any listed tag, compared weakly (a W/ prefix is ignored)."""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def runner_options(relay: IngestRelay) -> dict[str, Any]:
    """aiohttp server options that bound what a slow or abusive client can hold.

    aiohttp's keep-alive timer runs from the moment a connection opens and closes it if no
    complete request has arrived, so it is also the header timeout against slowloris.
    """
    ingest = relay.ingest_config
    return {
        "access_log": None,  # it would log addresses and User-Agents (P1)
        "keepalive_timeout": ingest.idle_timeout_seconds,
        "max_line_size": ingest.max_header_bytes,
        "max_field_size": ingest.max_header_bytes,
    }


class _Limits:
    """The four token buckets of `ingest.rate_limit`."""

    def __init__(self, ingest: IngestConfig) -> None:
        cfg = ingest.rate_limit
        self.enabled = cfg.enabled
        self.ip_requests = RateLimiter(
            cfg.ip_requests_per_second, cfg.ip_request_burst, max_tracked=cfg.max_tracked
        )
        self.ip_events = RateLimiter(
            cfg.ip_events_per_second, cfg.ip_event_burst, max_tracked=cfg.max_tracked
        )
        self.token_requests = RateLimiter(
            cfg.token_requests_per_second, cfg.token_request_burst, max_tracked=cfg.max_tracked
        )
        self.token_events = RateLimiter(
            cfg.token_events_per_second, cfg.token_event_burst, max_tracked=cfg.max_tracked
        )

    def check(self, ip: str, credential: Credential | None, events: int | None) -> None:
        """Raise a 429 Problem if the request (or, with `events`, its events) is over a limit.

        A static bearer token stands for a server-side app the operator gave it to, which sends
        for many users from one address: its own buckets replace the address's. A session token
        stands for one user of a gateway, sending from that user's address: it is charged to
        the address as well, so holding one does not lift the per-IP limit.
        """
        if not self.enabled:
            return
        amount = 1.0 if events is None else float(events)
        charges = []
        if credential is None or credential.kind == "session":
            charges.append(((self.ip_requests, self.ip_events)[events is not None], ip))
        if credential is not None:
            limiter = (self.token_requests, self.token_events)[events is not None]
            charges.append((limiter, credential.rate_key))
        for limiter, identity in charges:
            wait = limiter.take(identity, amount)
            if wait:
                raise Problem(
                    429,
                    "rate-limited",
                    "Too many requests or events; slow down",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )


def _authenticator(ingest: IngestConfig) -> Authenticator:
    auth = ingest.auth
    return Authenticator(
        required=auth.required,
        bearer_tokens={
            name: token.get_secret_value() for name, token in auth.bearer_tokens.items()
        },
        session_issuers=auth.session_issuers,
        session_max_ttl_s=auth.session_max_ttl_seconds,
    )


def _unauthorized() -> Problem:
    # One answer for every refusal: which check failed (an unknown issuer, a bad signature, an
    # expired token) would tell a prober what it got right.
    return Problem(
        401,
        "unauthorized",
        "Missing or invalid token",
        headers={"WWW-Authenticate": 'Bearer realm="relay"'},
    )


def _refused(refusal: Refusal) -> Problem:
    return Problem(503, refusal.type, refusal.title, headers=_RETRY_AFTER)


class _Ingest:
    """`POST /v1/events` and `POST /v1/atlas/events`: one pipeline, two decoders and scrubs."""

    def __init__(self, relay: IngestRelay) -> None:
        self._relay = relay
        self._config = relay.ingest_config
        self._trusted = [
            ipaddress.ip_network(cidr, strict=False) for cidr in self._config.trusted_proxies
        ]
        self._limits = _Limits(self._config)
        self._authenticator = _authenticator(self._config)
        metrics = self._metrics = relay.metrics
        # Labelled children looked up once: `labels()` costs several times the increment.
        self._received = {e: metrics.received.labels(e) for e in _ENDPOINTS}
        self._accepted = {e: metrics.accepted.labels(e) for e in _ENDPOINTS}
        self._latency = {e: metrics.request_latency.labels(e) for e in _ENDPOINTS}
        self._by_status: dict[tuple[str, int], Any] = {}

    async def native(self, request: web.Request) -> web.Response:
        return await self._timed(request, "native", decode_native, scrub_native)

    async def atlas(self, request: web.Request) -> web.Response:
        return await self._timed(request, "atlas", decode_atlas, scrub_atlas)

    async def _timed(
        self, request: web.Request, endpoint: str, decode: Decode[_Event], scrub: Scrub[_Event]
    ) -> web.Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await self._handle(request, endpoint, decode, scrub)
            status = response.status
            return response
        except Problem as problem:
            status = problem.status
            raise
        finally:
            by_status = self._by_status.get((endpoint, status))
            if by_status is None:
                by_status = self._by_status[(endpoint, status)] = self._metrics.requests.labels(
                    endpoint, str(status)
                )
            by_status.inc()
            self._latency[endpoint].observe(time.perf_counter() - started)

    async def _handle(
        self, request: web.Request, endpoint: str, decode: Decode[_Event], scrub: Scrub[_Event]
    ) -> web.Response:
        relay, config = self._relay, self._config
        refusal = relay.backpressure.refusal()
        if refusal is not None:
            raise _refused(refusal)
        now_ms = relay.clock()
        try:
            credential = self._authenticator.authenticate(
                request.headers.get("Authorization"), now_ms // 1000
            )
        except AuthError:
            raise _unauthorized() from None
        ip = _client_ip(request, self._trusted)
        self._limits.check(ip, credential, None)
        body = await read_body(request, config.max_body_bytes, config.body_timeout_seconds)
        decoded = decode(body, config.max_events_per_request)
        events, overflow = decoded.events, decoded.overflow
        # Atlas neither caps its batches nor retries: its events past the cap are rejected and
        # the rest kept (DESIGN §3.2). A native client is told to split its batch.
        if overflow and endpoint == "native":
            raise too_many_events(config.max_events_per_request)
        self._limits.check(ip, credential, len(events))
        ctx = RequestContext(
            now_ms=now_ms,
            region=relay.resolver.resolve(ip),
            network_material=network_material(ip, request.headers.get("User-Agent")),
            source_network=source_network(ip),
        )
        result = scrub(events, ctx, relay.admission)
        if overflow:
            result.reject_overflow(len(events), overflow)
        await self._store(ctx, result)
        self._count(endpoint, len(events) + overflow, result)
        return _answer(endpoint, result)

    async def _store(self, ctx: RequestContext, result: ScrubResult) -> None:
        relay = self._relay
        rejected = dict(result.rejected)
        if result.unsupported:
            rejected["unsupported_type"] = result.unsupported
        if not (result.observations or rejected):
            return
        record = IngestRecord(
            arrival_window_ms=window_start(ctx.now_ms, relay.window_ms),
            region=ctx.region,
            observations=result.observations,
            rejected=rejected,
            networks=relay.admission.networks(result.observations, ctx.source_network),
        )
        refusal = await relay.accept(record)
        if refusal is not None:
            raise _refused(refusal)

    def _count(self, endpoint: str, received: int, result: ScrubResult) -> None:
        self._received[endpoint].inc(received)
        self._accepted[endpoint].inc(len(result.observations))
        for reason, count in result.rejected.items():
            self._metrics.rejected.labels(reason).inc(count)
        if result.unsupported:
            self._metrics.dropped.labels("unsupported_type").inc(result.unsupported)


@with_config(extra="forbid")
class IngestAnswer(TypedDict):
    """`202` of `POST /v1/events`: the valid events are durable (WAL, fsynced)."""

    accepted: Count
    rejected: Count
    errors: list[EventError]


@with_config(extra="forbid")
class AtlasIngestAnswer(IngestAnswer):
    """`202` of `POST /v1/atlas/events`."""

    unsupported: Annotated[
        Count, Field(description="Events of Atlas types relay does not map; dropped.")
    ]


@with_config(extra="forbid")
class ConsistencyProof(TypedDict):
    """`GET /v1/proof/consistency`: the tree of the first `new` batch messages extends the tree
    of the first `old` (RFC 9162 §2.1.4)."""

    old: Count
    new: Count
    proof: Annotated[
        list[Hash64],
        Field(
            description="PROOF(old, D[new]) of RFC 9162 §2.1.4.1, base64 SHA-256 hashes; empty "
            "for old = new and for old = 0."
        ),
    ]


@with_config(extra="forbid")
class ReadyStatus(TypedDict):
    """`GET /readyz` on the public listener: ready or not, no detail (P9)."""

    ready: bool


@with_config(extra="forbid")
class Health(TypedDict):
    """`GET /healthz`: the process is up."""

    status: Literal["ok"]


def _answer(endpoint: str, result: ScrubResult) -> web.Response:
    answer: IngestAnswer | AtlasIngestAnswer = {
        "accepted": len(result.observations),
        "rejected": sum(result.rejected.values()),
        "errors": result.errors,
    }
    if endpoint == "atlas":
        answer = {**answer, "unsupported": result.unsupported}
    return web.Response(body=orjson.dumps(answer), status=202, content_type="application/json")


class _Views:
    """The public GET endpoints: client config and script, operator view, proofs, health."""

    def __init__(self, relay: IngestRelay) -> None:
        self._relay = relay
        self._client_script = ClientScript()

    async def config(self, request: web.Request) -> web.Response:
        doc = self._relay.client_config
        headers = {"ETag": doc.etag, "Cache-Control": f"public, max-age={doc.max_age}"}
        if _etag_matches(request.headers.get("If-None-Match", ""), doc.etag):
            return web.Response(status=304, headers=headers)
        return web.Response(body=doc.body, content_type="application/json", headers=headers)

    async def client_script(self, request: web.Request) -> web.Response:
        script = self._client_script
        if _etag_matches(request.headers.get("If-None-Match", ""), script.headers["ETag"]):
            return web.Response(status=304, headers=script.headers)
        return web.Response(
            body=script.body,
            content_type="text/javascript",
            charset="utf-8",
            headers=script.headers,
        )

    async def operator(self, request: web.Request) -> web.Response:
        return web.json_response(self._relay.operator_view())

    async def consistency_proof(self, request: web.Request) -> web.Response:
        old, new = _tree_size(request, "old"), _tree_size(request, "new")
        size = self._relay.log_size()
        if not old <= new <= size:
            raise Problem(
                400,
                "bad-proof-request",
                "Tree sizes out of range",
                f"need 0 <= old <= new <= {size} (the current checkpoint's size)",
            )
        # The proof is over the leaves of batches 0..new − 1: O(new), ~35 ms of hashing for a
        # year of 300 s windows (105 120 leaves). It runs on the loop, like the seal commit that
        # appends leaves, so the two never see each other half done.
        leaves = self._relay.log_leaves(new)
        if leaves is None:
            raise Problem(
                404,
                "proof-unavailable",
                "This relay cannot prove consistency for that tree",
                "its outbox has no leaf hashes for batches sealed before it was upgraded",
            )
        answer: ConsistencyProof = {
            "old": old,
            "new": new,
            "proof": [b64encode(h) for h in consistency_proof(leaves, old)],
        }
        return web.json_response(answer)

    async def healthz(self, request: web.Request) -> web.Response:
        health: Health = {"status": "ok"}
        return web.json_response(health)

    async def readyz(self, request: web.Request) -> web.Response:
        # Ready or not, for a load balancer; which check failed is the operator's business.
        status: ReadyStatus = {"ready": self._relay.backpressure.ready}
        return web.json_response(status, status=200 if status["ready"] else 503)


def create_app(relay: IngestRelay) -> web.Application:
    ingest = relay.ingest_config
    app = web.Application(
        # CORS outermost, so that error answers carry CORS headers and browsers can read them.
        middlewares=[
            _cors_middleware(ingest.cors.allow_origins, ingest.cors.max_age_seconds),
            _problems_middleware,
        ],
        client_max_size=ingest.max_body_bytes,
        # read_body decompresses itself, bounded by max_body_bytes (a gzip bomb is refused after
        # the limit), and answers 400/415 for bad or unsupported encodings. With aiohttp's own
        # decompression on, bodies reached read_body already inflated: valid gzip got 400
        # bad-gzip, invalid gzip a 500, and br a 400 text/plain.
        handler_args={"auto_decompress": False},
    )
    events, views = _Ingest(relay), _Views(relay)
    app.router.add_post("/v1/events", events.native)
    app.router.add_post("/v1/atlas/events", events.atlas)
    app.router.add_get("/v1/config", views.config)
    app.router.add_get("/v1/client.js", views.client_script)
    app.router.add_get("/v1/operator", views.operator)
    app.router.add_get("/v1/proof/consistency", views.consistency_proof)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    return app


def create_operator_app(relay: IngestRelay) -> web.Application:
    """The operator listener's app: no CORS (no browser page needs it), no auth (bind it to
    loopback or a private network, as `metrics.listen` does by default)."""
    metrics = relay.metrics
    backpressure = relay.backpressure

    async def readyz(request: web.Request) -> web.Response:
        readiness: Readiness = {"ready": backpressure.ready, "checks": backpressure.checks()}
        return web.json_response(readiness, status=200 if readiness["ready"] else 503)

    async def get_metrics(request: web.Request) -> web.Response:
        backpressure.update_gauges()
        return web.Response(
            body=metrics.exposition(),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    app = web.Application(middlewares=[_problems_middleware])
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/readyz", readyz)
    return app


@web.middleware
async def _problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem as problem:
        return problem_response(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem_response(http_error_problem(exc))


def _cors_middleware(allowed: list[str], max_age: int) -> Callable[..., Any]:
    allow_any = "*" in allowed
    allowed_set = frozenset(allowed)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        permitted = origin is not None and (allow_any or origin in allowed_set)
        if request.method == "OPTIONS" and permitted:
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Content-Type, Content-Encoding, Authorization"
            )
            response.headers["Access-Control-Max-Age"] = str(max_age)
        else:
            response = await handler(request)
        if permitted:
            response.headers["Access-Control-Allow-Origin"] = "*" if allow_any else origin or ""
            response.headers["Access-Control-Expose-Headers"] = "ETag, Retry-After"
            if not allow_any:
                response.headers["Vary"] = "Origin"
        return response

    return cors

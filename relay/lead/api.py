"""The lead API and dashboard over HTTP (aiohttp); `openapi.yaml`, tag `lead`, specifies it.

Read-only. With `lead.api_tokens` set, every /v1 request needs one of the tokens as a bearer
token; the dashboard's page and scripts hold no data and are served to anyone (the page asks for
a token when the API answers 401); /metrics needs one too, /healthz and /readyz do not (both
in relay/lead/exposition.py). Every error is RFC 9457 problem+json.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.config import LeadMetricsConfig
from relay.core.numbers import MAX_SAFE_INT
from relay.core.problem import Problem, http_error_problem, problem_response
from relay.core.vocabulary import NODE_ID
from relay.lead import exposition
from relay.lead.service import LeadService
from relay.lead.timerange import RangeError, TimeRange, parse_range, parse_step
from relay.lead.watch import NodeWatch

__all__ = ["SERVICE", "create_lead_app"]

log = logging.getLogger(__name__)

SERVICE = web.AppKey("lead_service", LeadService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ROLES = ("distributor", "storage")
_ROLE = re.compile("|".join(_ROLES))
_ORIGIN = re.compile(r"[^+\s]{1,255}")
_STATIC_TYPES = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
# The dashboard loads nothing from elsewhere and runs no inline script.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _json(body: Any) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _bad(parameter: str, detail: str) -> Problem:
    return Problem(400, "invalid-parameter", f"Invalid {parameter}", detail, parameter=parameter)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false")
    if text not in ("true", "false"):
        raise _bad(name, f"{name} must be true or false")
    return text == "true"


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise _bad(name, f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _path_int(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SAFE_INT:
        raise _bad(name, f"{name} must be a whole number from 0 to 2^53 - 1")
    return int(text)


def _path_text(request: web.Request, name: str, pattern: re.Pattern[str]) -> str:
    text = request.match_info[name]
    if not pattern.fullmatch(text):
        raise _bad(name, f"{name} must match {pattern.pattern}")
    return text


def _origin_filter(request: web.Request) -> str | None:
    """`origin` of /v1/batches: absent, or an origin as openapi.yaml's pattern says (an empty
    one would otherwise match nothing and answer an empty page, as if it were valid)."""
    text = request.query.get("origin")
    if text is not None and not _ORIGIN.fullmatch(text):
        raise _bad("origin", f"origin must match {_ORIGIN.pattern}")
    return text


def _range(request: web.Request, now_ms: int) -> TimeRange:
    try:
        return parse_range(request.query.get("from"), request.query.get("to"), now_ms)
    except RangeError as exc:
        raise Problem(400, "invalid-range", "Invalid time range", str(exc)) from None


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in allowed:
        raise _bad(name, f"{name} must be one of {', '.join(allowed)}")
    return value


def _region(request: web.Request) -> str | None:
    value = request.query.get("region")
    if value is not None and not (value.isascii() and value.isalpha() and len(value) == 2):
        raise _bad("region", "region is a two-letter code such as EU or ZZ")
    return None if value is None else value.upper()


async def nodes(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return _json(
        await service.nodes(
            _range(request, service.clock()),
            role=_choice(request, "role", _ROLES),
            region=_region(request),
            include_unverified=_flag(request, "include_unverified"),
        )
    )


async def series(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    time_range = _range(request, service.clock())
    try:
        step_ms = parse_step(request.query.get("step"), time_range)
    except RangeError as exc:
        raise Problem(400, "invalid-range", "Invalid step", str(exc)) from None
    return _json(
        await service.series(
            _path_text(request, "role", _ROLE),
            _path_text(request, "id", NODE_ID),
            time_range,
            step_ms=step_ms,
            region=_region(request),
            include_unverified=_flag(request, "include_unverified"),
        )
    )


async def operators(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE].operators())


async def batches(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    return _json(
        await service.batches(
            origin=_origin_filter(request),
            time_range=_range(request, service.clock()),
            include_unverified=_flag(request, "include_unverified"),
            limit=_int(request, "limit", 100, 1, 1000),
            offset=_int(request, "offset", 0, 0, 9000),
        )
    )


async def batch(request: web.Request) -> web.Response:
    return _json(
        await request.app[SERVICE].batch(
            request.match_info["origin"],
            _path_int(request, "seq"),
            include_unverified=_flag(request, "include_unverified"),
        )
    )


async def summary(request: web.Request) -> web.Response:
    return _json(
        await request.app[SERVICE].summary(
            request.match_info["origin"],
            _path_int(request, "seq"),
            _path_int(request, "i"),
            include_unverified=_flag(request, "include_unverified"),
        )
    )


async def checkpoints(request: web.Request) -> web.Response:
    return _json(
        await request.app[SERVICE].checkpoints(
            request.match_info["origin"],
            include_unverified=_flag(request, "include_unverified"),
            limit=_int(request, "limit", 100, 1, 1000),
        )
    )


def _static(name: str) -> Handler:
    body = resources.files("relay.lead").joinpath("static", name).read_bytes()
    content_type = _STATIC_TYPES[name]

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers=_PAGE_HEADERS
        )

    return handler


async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/dashboard")


def _middleware(tokens: Mapping[str, str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    secrets = [token.encode() for token in tokens.values()]

    def authorized(header: str | None) -> bool:
        if header is None or not header.startswith("Bearer "):
            return False
        # Header bytes that are not UTF-8 arrive as surrogate escapes; compare the bytes sent
        # (a plain encode() raised, and the request got a 500).
        offered = header.removeprefix("Bearer ").strip().encode("utf-8", "surrogateescape")
        # Compare with every token, always: the time taken does not tell which one matched.
        return sum(hmac.compare_digest(offered, secret) for secret in secrets) > 0

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            # /metrics holds what /v1/nodes does; Prometheus sends the token (docs/leads.md
            # "Alerts").
            needs_token = secrets and (
                request.path.startswith("/v1/") or request.path == "/metrics"
            )
            if needs_token and not authorized(request.headers.get("Authorization")):
                raise Problem(
                    401,
                    "unauthorized",
                    "A valid bearer token is required",
                    headers={"WWW-Authenticate": 'Bearer realm="relay-lead"'},
                )
            return await handler(request)
        except Problem as problem:
            return problem_response(problem)
        except web.HTTPRedirection:
            raise
        except web.HTTPException as exc:
            return problem_response(http_error_problem(exc))
        except Exception:
            log.exception("lead API: %s %s failed", request.method, request.path)
            return problem_response(Problem(500, "internal", "The lead API failed"))

    return middleware


def create_lead_app(
    service: LeadService,
    tokens: Mapping[str, str],
    watch: NodeWatch | None = None,
    counters: CollectorRegistry | None = None,
) -> web.Application:
    """The lead's app; `watch` (default: lead.metrics defaults) and `counters` feed /metrics."""
    app = web.Application(middlewares=[_middleware(tokens)])
    app[SERVICE] = service
    exposition.add_routes(
        app,
        watch or NodeWatch(service, LeadMetricsConfig()),
        counters or CollectorRegistry(auto_describe=True),
    )
    # Path parameters are checked by the handlers, so a malformed one is a 400 naming it (an
    # origin is only looked up: one that is not stored is a 404). An origin may hold a '/' (sent
    # as is or as %2F): it takes all segments but the fixed ones.
    app.router.add_get("/v1/nodes", nodes)
    app.router.add_get("/v1/nodes/{role}/{id}/series", series)
    app.router.add_get("/v1/operators", operators)
    app.router.add_get("/v1/batches", batches)
    app.router.add_get("/v1/batches/{origin:.+}/{seq}", batch)
    app.router.add_get("/v1/summaries/{origin:.+}/{seq}/{i}", summary)
    app.router.add_get("/v1/checkpoints/{origin:.+}", checkpoints)
    app.router.add_get("/", root)
    app.router.add_get("/dashboard", _static("index.html"))
    for name in ("dashboard.js", "dashboard.css"):
        app.router.add_get(f"/dashboard/{name}", _static(name))
    return app

"""RFC 9457 problem details: every error relay answers has this shape.

A problem never echoes request content (P1): titles and details are fixed text or name a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

__all__ = ["PROBLEM_TYPE_BASE", "Problem", "http_error_problem", "problem_response"]

PROBLEM_TYPE_BASE = "urn:relay:problem:"


class Problem(Exception):
    """Raised anywhere in a handler to answer with problem+json."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: Problem, instance: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    return web.Response(
        status=problem.status,
        body=orjson.dumps(body),
        content_type="application/problem+json",
        headers=problem.headers,
    )


def http_error_problem(exc: web.HTTPException) -> Problem:
    """aiohttp's own error (404, 405, ...) as a Problem, keeping Allow on a 405.

    RFC 9110 §15.5.6 requires Allow on 405; the rest of the exception describes aiohttp's text
    body and is dropped.
    """
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return Problem(exc.status, exc.reason.lower().replace(" ", "-"), exc.reason, headers=headers)

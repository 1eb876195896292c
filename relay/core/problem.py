"""RFC 9457 problem details: every error relay answers has this shape.

A problem never echoes request content (P1): titles and details are fixed text or name a field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, NotRequired

import orjson
from aiohttp import web
from pydantic import Field, with_config
from typing_extensions import TypedDict

__all__ = [
    "PROBLEM_TYPE_BASE",
    "Problem",
    "ProblemDetails",
    "http_error_problem",
    "problem_response",
]

PROBLEM_TYPE_BASE = "urn:relay:problem:"

_URI_REFERENCE = {"format": "uri-reference"}


@with_config(extra="allow")
class ProblemDetails(TypedDict):
    """RFC 9457 problem details; never echoes request content."""

    type: Annotated[
        str,
        Field(
            json_schema_extra=_URI_REFERENCE,
            description="`urn:relay:problem:<slug>`, e.g. urn:relay:problem:invalid-json.",
        ),
    ]
    title: str
    status: Annotated[int, Field(ge=100, le=599)]
    detail: NotRequired[str]
    instance: NotRequired[Annotated[str, Field(json_schema_extra=_URI_REFERENCE)]]


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
    body: ProblemDetails = {
        "type": PROBLEM_TYPE_BASE + problem.slug,
        "title": problem.title,
        "status": problem.status,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if instance:
        body["instance"] = instance
    return web.Response(
        status=problem.status,
        body=orjson.dumps({**body, **problem.extra}),
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

"""The aiohttp runner relay serves with: bounded connections, and parser errors kept private.

aiohttp answers a request its parser rejects (a header line over the limit, a bad
Content-Length or chunk size) itself, outside the application: with a text body quoting the
offending bytes and a log line naming the client's address. Either could carry an identifier
(a Cookie, an Authorization header) into a response or the operator's logs (P1). The handler
below answers such requests with a fixed problem+json and logs only the status and error class.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from relay.core.problem import Problem, problem_response

__all__ = ["make_runner"]

log = logging.getLogger(__name__)


class _PrivateErrorsHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.warning("refused a malformed request: HTTP %d (%s)", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; closing the connection")
        phrase = HTTPStatus(status).phrase
        response = problem_response(Problem(status, phrase.lower().replace(" ", "-"), phrase))
        response.force_close()
        return response


class _PrivateErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _PrivateErrorsHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain Server; give it the handler class above. Same state, one
        # method differs, so the swap is safe for the aiohttp minor pinned in pyproject
        # (tests/test_aiohttp_internals.py checks these internals).
        server.__class__ = _PrivateErrorsServer
        return server


def make_runner(app: web.Application, **options: Any) -> web.AppRunner:
    return _Runner(app, handle_signals=False, **options)

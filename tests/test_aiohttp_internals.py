"""The aiohttp internals relay.ingest.server relies on are still there, and still behave.

relay subclasses private parts of aiohttp to keep parser errors private (P1):
`AppRunner._make_server` (a coroutine building the `web.Server`), and the server's `_loop` and
`_kwargs`, from which `Server.__call__` builds each connection's `RequestHandler`. Nothing in
aiohttp promises these across releases, so pyproject pins aiohttp to the minor these tests pass
on; a new release that moves them fails here, by name, rather than in production.
"""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from importlib.metadata import version
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from packaging.requirements import Requirement

from relay.ingest.server import make_runner

ROOT = Path(__file__).resolve().parent.parent


def test_installed_aiohttp_is_the_pinned_minor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (pin,) = [Requirement(d) for d in project["dependencies"] if d.startswith("aiohttp")]
    assert pin.specifier.contains(version("aiohttp")), (pin, version("aiohttp"))
    # A minor, not a major: the bounds name one x.y.
    bounds = sorted(str(s) for s in pin.specifier)
    assert len(bounds) == 2 and bounds[0].startswith("<") and bounds[1].startswith(">=")


def test_app_runner_builds_its_server_in_make_server() -> None:
    make_server = web.AppRunner._make_server
    assert inspect.iscoroutinefunction(make_server)
    assert list(inspect.signature(make_server).parameters) == ["self"]


def test_server_keeps_loop_and_handler_kwargs_and_builds_request_handlers() -> None:
    """`Server.__call__` is `RequestHandler(self, loop=self._loop, **self._kwargs)`: the call
    relay's subclass repeats with its own handler class."""

    async def build() -> None:
        server = web.Server(lambda request: web.Response(), max_field_size=1234)
        assert server._loop is asyncio.get_running_loop()
        assert server._kwargs["max_field_size"] == 1234
        handler = server()
        assert type(handler) is RequestHandler
        parameters = inspect.signature(RequestHandler.__init__).parameters
        assert list(parameters)[:2] == ["self", "manager"] and "loop" in parameters
        assert set(server._kwargs) <= set(parameters)

    asyncio.run(build())


def test_handle_error_keeps_its_signature() -> None:
    parameters = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert parameters == ["self", "request", "status", "exc", "message"]


async def test_relays_runner_serves_with_its_private_error_handler() -> None:
    runner = make_runner(web.Application())
    await runner.setup()
    try:
        server = runner.server
        assert server is not None
        handler = server()
        assert type(handler).__name__ == "_PrivateErrorsHandler"
        assert isinstance(handler, RequestHandler)
    finally:
        await runner.cleanup()

"""A Kibana that answers the two APIs `relay es-setup --kibana` uses, as Kibana 8 documents them.

- Data views API: `GET /api/data_views/data_view/{id}` (200 `{"data_view": {...}}`, or 404),
  `POST /api/data_views/data_view` with `{"data_view": {...}, "override": bool}` (200 with the
  view; a known id is a 409 conflict, a known title without `override` a 400 duplicate);
- role management API: `PUT /api/security/role/{name}` with `elasticsearch` (cluster, indices,
  run_as, ...), `kibana` (a list of `{base, feature, spaces}`, where `base` and `feature` exclude
  each other and `spaces` is required), `metadata` and `description` (204, created or updated).

As Kibana does, it answers 401 without credentials, and 400 to a write without the `kbn-xsrf`
header or with a body its schemas reject (unknown keys included). Errors have Kibana's shape,
`{"statusCode", "error", "message"}`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

_DATA_VIEW_KEYS = {
    "id",
    "title",
    "name",
    "timeFieldName",
    "sourceFilters",
    "fieldFormats",
    "fieldAttrs",
    "runtimeFieldMap",
    "allowNoIndex",
    "allowHidden",
    "type",
    "typeMeta",
    "fields",
    "namespaces",
    "version",
}
_ROLE_KEYS = {"elasticsearch", "kibana", "metadata", "description"}
_ES_ROLE_KEYS = {"cluster", "indices", "remote_indices", "remote_cluster", "run_as"}
_KIBANA_ENTRY_KEYS = {"base", "feature", "spaces"}
_PRIVILEGES = {"all", "read"}
_REASONS = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}


class KibanaRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class FakeKibana:
    def __init__(self, credentials: set[str]) -> None:
        #: Authorization header values it accepts.
        self.credentials = credentials
        self.data_views: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self._ids = itertools.count(1)
        self._server: TestServer | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._protocol])
        app.router.add_get("/api/data_views/data_view/{id}", self._get_data_view)
        app.router.add_post("/api/data_views/data_view", self._create_data_view)
        app.router.add_put("/api/security/role/{name}", self._put_role)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/")).rstrip("/")

    @web.middleware
    async def _protocol(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.json() if request.can_read_body else None
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body))
        try:
            if request.headers.get("Authorization") not in self.credentials:
                raise KibanaRefusal(401, "[security_exception]: unable to authenticate user")
            if request.method != "GET" and "kbn-xsrf" not in request.headers:
                raise KibanaRefusal(400, "Request must contain a kbn-xsrf header.")
            response: web.StreamResponse = await handler(request)
            return response
        except KibanaRefusal as refusal:
            return web.json_response(
                {
                    "statusCode": refusal.status,
                    "error": _REASONS[refusal.status],
                    "message": str(refusal),
                },
                status=refusal.status,
            )

    async def _get_data_view(self, request: web.Request) -> web.Response:
        view = self.data_views.get(request.match_info["id"])
        if view is None:
            raise KibanaRefusal(
                404, f"Saved object [index-pattern/{request.match_info['id']}] not found"
            )
        return web.json_response({"data_view": view})

    async def _create_data_view(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("data_view"), dict):
            raise KibanaRefusal(400, "[request body.data_view]: expected a plain object value")
        unknown = set(body) - {"data_view", "override", "refresh_fields"}
        if unknown:
            raise KibanaRefusal(
                400, f"[request body.{min(unknown)}]: definition for this key is missing"
            )
        view = body["data_view"]
        extra = set(view) - _DATA_VIEW_KEYS
        if extra:
            raise KibanaRefusal(
                400, f"[request body.data_view.{min(extra)}]: definition for this key is missing"
            )
        if not isinstance(view.get("title"), str) or not view["title"]:
            raise KibanaRefusal(
                400, "[request body.data_view.title]: expected value of type [string]"
            )
        view_id = view.get("id") or f"generated-{next(self._ids)}"
        if view_id in self.data_views:
            raise KibanaRefusal(409, f"Saved object [index-pattern/{view_id}] conflict")
        same_title = [k for k, v in self.data_views.items() if v["title"] == view["title"]]
        if same_title and not body.get("override"):
            raise KibanaRefusal(400, f"Duplicate data view: {view['title']}")
        for old in same_title:
            del self.data_views[old]
        stored = {**view, "id": view_id, "version": "WzEsMV0="}
        self.data_views[view_id] = stored
        return web.json_response({"data_view": stored})

    async def _put_role(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not isinstance(body, dict) or set(body) - _ROLE_KEYS:
            raise KibanaRefusal(400, "[request body]: definition for a key is missing")
        es = body.get("elasticsearch", {})
        if not isinstance(es, dict) or set(es) - _ES_ROLE_KEYS:
            raise KibanaRefusal(
                400, "[request body.elasticsearch]: definition for a key is missing"
            )
        for grant in es.get("indices", []):
            if not grant.get("names") or not grant.get("privileges"):
                raise KibanaRefusal(400, "[request body.elasticsearch.indices]: names, privileges")
        for entry in body.get("kibana", []):
            if set(entry) - _KIBANA_ENTRY_KEYS or "spaces" not in entry:
                raise KibanaRefusal(400, "[request body.kibana]: base, feature and spaces")
            base, feature = entry.get("base", []), entry.get("feature", {})
            if base and feature:
                raise KibanaRefusal(
                    400, "[request body.kibana]: base and feature privileges cannot be combined"
                )
            if set(base) - _PRIVILEGES or any(
                not set(privileges) <= _PRIVILEGES for privileges in feature.values()
            ):
                raise KibanaRefusal(400, "[request body.kibana]: unknown privilege")
        self.roles[request.match_info["name"]] = body
        return web.Response(status=204)

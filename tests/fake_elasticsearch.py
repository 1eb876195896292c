"""A FAKE Elasticsearch 8.x for tests: an aiohttp server speaking the HTTP API, not Elasticsearch.

It reproduces what relay depends on, at the HTTP level, so the real `elasticsearch` client runs
against it unchanged:

- `GET /` with `X-Elastic-Product: Elasticsearch` on every answer (the client's product check)
  and compatibility-header handling as in ES 8 (`compatible-with=9` is refused with 400, which is
  what an 8.x cluster does to the 9.x client);
- `_bulk`: NDJSON parsing, `create` items answered one by one (201, or 409
  version_conflict_engine_exception for an existing `_id`), `histogram` fields checked against
  an installed template as ES does (values ascending, as many counts as values, counts ≥ 0);
- `_mget` (`docs` with `_index` and `_id`: found with `_source`, not found, or
  index_not_found_exception per item, as ES answers), `PUT /<index>/_create/<id>` (as `_bulk`
  create), `GET` and `DELETE /<index>/_doc/<id>`: what another writer (or the lead removing its
  document) does, so tests can take one of relay's ids first;
- `_search` (match_all, size), points in time (`POST /<indices>/_pit`, `DELETE /_pit`: a frozen
  view, searched through tests/fake_elasticsearch_search.py), `_refresh`, `DELETE /<index pattern>`;
- ILM simulated (`run_ilm_deletion`): indices whose template's lifecycle policy deletes are
  deleted at once, as if their age had come;
- `_index_template`, `_ilm/policy`, `_security/api_key` (create, get, invalidate by name): stored
  and recorded; a request made
  with one of the API keys created here is held to the key's index privileges for writing
  documents (`_bulk`, `_create`) and reading them back (`_mget`), with ES's wildcards in index
  names (`*` any string, `?` one character) and ES's answers (a 403 security_exception per bulk
  or mget item, or for the whole request when the key has no such privilege at all); any other
  credential is a superuser, as `elastic` is;
- injectable faults (`Faults`): a whole-request status for every call (503, 401, 403), partial
  429s inside a 200 bulk answer, a delay after applying a bulk (longer than the client's timeout:
  the write is done, the answer is lost, as with a real timeout), and 400
  mapper_parsing_exception for chosen documents.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import itertools
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.core.document import Document

__all__ = ["FakeElasticsearch", "Faults", "Recorded"]

Api = Callable[[web.Request], Awaitable[tuple[int, Any]]]
Handler = Callable[[web.Request], Awaitable[web.Response]]

VERSION = "8.15.0"
_COMPAT = re.compile(r"compatible-with=(\d+)")
_COMPAT_JSON = "application/vnd.elasticsearch+json;compatible-with=8"


@dataclass
class Faults:
    status: int | None = None  # every request answered with this status (503, 401, 403)
    throttle_every: int = 0  # in bulk answers, every n-th item is a 429 ...
    throttle_budget: int = 0  # ... until this many items were throttled
    delay: float = 0.0  # seconds before a bulk answer (after the bulk is applied)
    reject_ids: set[str] = field(default_factory=set)  # 400 mapper_parsing_exception, always


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def _error(status: int, kind: str, reason: str, **extra: Any) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason, **extra}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


class FakeElasticsearch:
    def __init__(self) -> None:
        self.faults = Faults()
        self.indices: dict[str, dict[str, dict[str, Any]]] = {}
        self.created_order: list[str] = []  # ids in the order they were first stored
        self.bulk_requests: list[list[tuple[str, int]]] = []  # (id, status) per _bulk item
        self.item_statuses: Counter[int] = Counter()
        self.requests: list[Recorded] = []  # every request other than _bulk and _search
        self.templates: dict[str, dict[str, Any]] = {}
        self.policies: dict[str, dict[str, Any]] = {}
        self.api_keys: list[dict[str, Any]] = []
        self._secrets: dict[str, str] = {}  # API key id -> secret
        self._item_counter = itertools.count(1)
        # Open points in time: id -> the (index, _id, _source) seen at opening, in shard-doc order.
        self.pits: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
        self._closing = asyncio.Event()
        self._server: TestServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        r = app.router
        r.add_get("/", self._endpoint(self._info))
        for path, api in (
            ("/_bulk", self._bulk),
            ("/{index}/_bulk", self._bulk),
            ("/_refresh", self._refresh),
            ("/{index}/_refresh", self._refresh),
            ("/_search", self._search),
            ("/{index}/_search", self._search),
            ("/{index}/_pit", self._open_pit),
            ("/_pit", self._close_pit),
            ("/_mget", self._mget),
            ("/{index}/_create/{id}", self._create_one),
            ("/{index}/_doc/{id}", self._doc),
            ("/_index_template/{name}", self._index_template),
            ("/_ilm/policy/{name}", self._ilm_policy),
            ("/_security/api_key", self._api_key),
        ):
            r.add_route("*", path, self._endpoint(api))
        r.add_delete("/{index}", self._endpoint(self._delete_index))
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()

    async def close(self) -> None:
        self._closing.set()  # delayed answers give up at once
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/")).rstrip("/")

    # -- what the tests read --------------------------------------------------------------------

    def documents(self) -> dict[str, Document]:
        return {
            doc_id: Document(index, doc_id, source)
            for index, docs in self.indices.items()
            for doc_id, source in docs.items()
        }

    def recorded(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    # -- protocol -------------------------------------------------------------------------------

    def _endpoint(self, api: Api) -> Handler:
        """The HTTP side every endpoint shares: compat headers, injected faults, product header."""

        async def handle(request: web.Request) -> web.Response:
            compat = {
                int(m.group(1))
                for name in ("Accept", "Content-Type")
                if (m := _COMPAT.search(request.headers.get(name, "")))
            }
            if compat - {7, 8}:
                reason = "Invalid media-type value on headers [Accept, Content-Type]"
                status, body = 400, _error(400, "media_type_header_exception", reason)
            elif self.faults.status is not None:
                status, body = self.faults.status, self._fault_body(self.faults.status)
            else:
                status, body = await api(request)
            headers = {"X-Elastic-Product": "Elasticsearch"}
            if status == 401:
                headers["WWW-Authenticate"] = 'ApiKey, Basic realm="security", charset="UTF-8"'
            media = _COMPAT_JSON if compat else "application/json"
            return web.Response(
                status=status,
                body=json.dumps(body).encode(),
                headers={**headers, "Content-Type": media},
            )

        return handle

    @staticmethod
    def _fault_body(status: int) -> dict[str, Any]:
        if status == 401:
            return _error(
                401, "security_exception", "unable to authenticate with provided credentials"
            )
        if status == 403:
            return _error(
                403, "security_exception", "action [indices:data/write/bulk] is unauthorized"
            )
        if status == 429:
            return _error(429, "es_rejected_execution_exception", "rejected execution")
        return _error(status, "cluster_block_exception", "blocked by: [SERVICE_UNAVAILABLE]")

    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k: v for k, v in request.headers.items() if k.lower() in _RECORDED_HEADERS},
                body,
            )
        )
        return body

    async def _info(self, request: web.Request) -> tuple[int, Any]:
        await self._record(request)
        return 200, {
            "name": "fake-node",
            "cluster_name": "fake-cluster",
            "cluster_uuid": "fake",
            "version": {
                "number": VERSION,
                "build_flavor": "default",
                "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0",
            },
            "tagline": "You Know, for Search",
        }

    # -- documents ------------------------------------------------------------------------------

    async def _bulk(self, request: web.Request) -> tuple[int, Any]:
        lines = [line for line in (await request.read()).split(b"\n") if line.strip()]
        started = time.perf_counter()
        items: list[dict[str, Any]] = []
        answered: list[tuple[str, int]] = []
        for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
            [(action, meta)] = json.loads(action_line).items()
            if action != "create":
                return 400, _error(400, "illegal_argument_exception", f"fake: no {action}")
            index = meta.get("_index") or request.match_info["index"]
            if self._allowed(request, _WRITE, index):
                status, extra = self._create(index, meta["_id"], json.loads(source_line))
            else:
                error = _unauthorized("indices:data/write/bulk[s]", index)
                status, extra = 403, {"error": error}
            answered.append((meta["_id"], status))
            self.item_statuses[status] += 1
            items.append({action: {"_index": index, "_id": meta["_id"], "status": status, **extra}})
        self.bulk_requests.append(answered)
        if self.faults.delay:
            # The bulk is applied; only its answer is late (then lost when the client gives up).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.faults.delay)
        took = int((time.perf_counter() - started) * 1000)
        errors = any(item["create"]["status"] >= 300 for item in items)
        return 200, {"took": took, "errors": errors, "items": items}

    def _create(
        self, index: str, doc_id: str, source: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        faults = self.faults
        if doc_id in faults.reject_ids:
            reason = "failed to parse field [region] of type [keyword] (fault injected by the test)"
            return 400, {"error": {"type": "mapper_parsing_exception", "reason": reason}}
        if faults.throttle_budget and next(self._item_counter) % faults.throttle_every == 0:
            faults.throttle_budget -= 1
            reason = "rejected execution of coordinating operation"
            return 429, {"error": {"type": "es_rejected_execution_exception", "reason": reason}}
        docs = self.indices.setdefault(index, {})
        if doc_id in docs:
            reason = f"[{doc_id}]: version conflict, document already exists (current version [1])"
            return 409, {"error": {"type": "version_conflict_engine_exception", "reason": reason}}
        problem = self._histogram_problem(index, source)
        if problem:
            return 400, {"error": {"type": "document_parsing_exception", "reason": problem}}
        docs[doc_id] = source
        self.created_order.append(doc_id)
        return 201, {
            "result": "created",
            "_version": 1,
            "_seq_no": len(docs) - 1,
            "_primary_term": 1,
        }

    def _histogram_problem(self, index: str, source: dict[str, Any]) -> str | None:
        """What ES's histogram field mapper would refuse in `source`, under a matching template."""
        for template in self.templates.values():
            if not any(fnmatch.fnmatch(index, p) for p in template["index_patterns"]):
                continue
            for name, mapping in template["template"]["mappings"]["properties"].items():
                if mapping.get("type") != "histogram" or name not in source:
                    continue
                values, counts = source[name].get("values"), source[name].get("counts")
                if values is None or counts is None or len(values) != len(counts):
                    return f"failed to parse field [{name}] of type [histogram]"
                if values != sorted(values) or any(c < 0 for c in counts):
                    return f"failed to parse field [{name}] of type [histogram]"
        return None

    async def _create_one(self, request: web.Request) -> tuple[int, Any]:
        if request.method not in ("PUT", "POST"):
            return 405, _error(405, "illegal_argument_exception", "fake: PUT or POST only")
        index, doc_id = request.match_info["index"], request.match_info["id"]
        if not self._allowed(request, _WRITE, index):
            return 403, _unauthorized_answer("indices:data/write/index", index)
        status, extra = self._create(index, doc_id, await request.json())
        return status, {"_index": index, "_id": doc_id, **extra}

    async def _doc(self, request: web.Request) -> tuple[int, Any]:
        index, doc_id = request.match_info["index"], request.match_info["id"]
        source = self.indices.get(index, {}).get(doc_id)
        if request.method == "DELETE":
            if source is None:
                return 404, {"_index": index, "_id": doc_id, "result": "not_found"}
            del self.indices[index][doc_id]
            return 200, {"_index": index, "_id": doc_id, "result": "deleted"}
        if request.method != "GET":
            return 405, _error(405, "illegal_argument_exception", "fake: GET or DELETE only")
        found = self._found(index, doc_id)
        return (200 if found["found"] else 404), found

    async def _mget(self, request: web.Request) -> tuple[int, Any]:
        body = await self._record(request)
        if request.method not in ("GET", "POST") or not isinstance(body, dict):
            return 400, _error(400, "action_request_validation_exception", "fake: no docs")
        grants = self._grants(request)
        if grants is not None and not any(_READ & set(g["privileges"]) for g in grants):
            return 403, _unauthorized_answer("indices:data/read/mget", "")
        answers = []
        for item in body.get("docs", []):
            index, doc_id = item["_index"], item["_id"]
            if not self._allowed(request, _READ, index):
                error = _unauthorized("indices:data/read/mget[shard]", index)
                answers.append({"_index": index, "_id": doc_id, "error": error})
            elif index not in self.indices:
                reason = "no such index [" + index + "]"
                error = {"type": "index_not_found_exception", "reason": reason, "index": index}
                answers.append({"_index": index, "_id": doc_id, "error": error})
            else:
                answers.append(self._found(index, doc_id))
        return 200, {"docs": answers}

    def _found(self, index: str, doc_id: str) -> dict[str, Any]:
        source = self.indices.get(index, {}).get(doc_id)
        if source is None:
            return {"_index": index, "_id": doc_id, "found": False}
        return {
            "_index": index,
            "_id": doc_id,
            "_version": 1,
            "_seq_no": 0,
            "_primary_term": 1,
            "found": True,
            "_source": source,
        }

    def _grants(self, request: web.Request) -> list[dict[str, Any]] | None:
        """The index grants of the API key a request carries; None for any other credential."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "ApiKey":
            return None
        key_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        if self._secrets.get(key_id) != secret:
            return None
        [key] = [k for k in self.api_keys if k["id"] == key_id]
        if key["invalidated"]:  # ES answers 401; here it may do nothing at all
            return []
        return [g for role in key["role_descriptors"].values() for g in role.get("indices", [])]

    def _allowed(self, request: web.Request, privileges: frozenset[str], index: str) -> bool:
        grants = self._grants(request)
        return grants is None or any(
            privileges & set(grant["privileges"])
            and any(_index_pattern(name).fullmatch(index) for name in grant["names"])
            for grant in grants
        )

    async def _refresh(self, request: web.Request) -> tuple[int, Any]:
        return 200, {"_shards": {"total": 1, "successful": 1, "failed": 0}}

    async def _open_pit(self, request: web.Request) -> tuple[int, Any]:
        """`POST /<indices>/_pit?keep_alive=`: a frozen view of the matching documents.

        Expiry after keep_alive is not modelled (tests are shorter); ES requires keep_alive.
        """
        if "keep_alive" not in request.query:
            return 400, _error(400, "action_request_validation_exception", "[keep_alive] missing")
        patterns = request.match_info["index"].split(",")
        pit_id = base64.b64encode(secrets.token_bytes(12)).decode()
        self.pits[pit_id] = [
            (index, doc_id, dict(source))
            for index in sorted(self.indices)
            if any(fnmatch.fnmatch(index, p) for p in patterns)
            for doc_id, source in sorted(self.indices[index].items())
        ]
        return 200, {"id": pit_id, "_shards": {"total": 1, "successful": 1, "failed": 0}}

    async def _close_pit(self, request: web.Request) -> tuple[int, Any]:
        raw = await request.read()
        pit_id = json.loads(raw).get("id") if raw else None
        if request.method != "DELETE" or pit_id is None:
            return 400, _error(400, "action_request_validation_exception", "[id] missing")
        freed = self.pits.pop(pit_id, None) is not None
        return (200 if freed else 404), {"succeeded": freed, "num_freed": int(freed)}

    async def _search(self, request: web.Request) -> tuple[int, Any]:
        raw = await request.read()
        body = json.loads(raw) if raw else {}
        if "pit" in body or "index" not in request.match_info:
            return 400, _error(
                400, "parsing_exception", "fake: PIT search needs the searching fake"
            )
        if set(body.get("query", {"match_all": {}})) != {"match_all"}:
            return 400, _error(400, "parsing_exception", "fake: only match_all")
        pattern = request.match_info["index"]
        hits = [
            {"_index": index, "_id": doc_id, "_score": 1.0, "_source": source}
            for index in sorted(self.indices)
            if any(fnmatch.fnmatch(index, p) for p in pattern.split(","))
            for doc_id, source in sorted(self.indices[index].items())
        ]
        size = int(body.get("size", request.query.get("size", 10)))
        return 200, {
            "took": 0,
            "timed_out": False,
            "hits": {"total": {"value": len(hits), "relation": "eq"}, "hits": hits[:size]},
        }

    async def _delete_index(self, request: web.Request) -> tuple[int, Any]:
        await self._record(request)
        for pattern in request.match_info["index"].split(","):
            for index in [i for i in self.indices if fnmatch.fnmatch(i, pattern)]:
                del self.indices[index]
        return 200, {"acknowledged": True}

    # -- index lifecycle (simulated) -------------------------------------------------------------

    def run_ilm_deletion(self) -> list[str]:
        """FAKE ILM: delete every index whose lifecycle policy has a delete phase, as if all of
        them had reached its age; return their names.

        An index's policy is the `index.lifecycle.name` of the highest-priority template whose
        `index_patterns` match its name, as ES applies templates when an index is created.
        """
        deleted = []
        for index in list(self.indices):
            matching = [
                body
                for body in self.templates.values()
                if any(fnmatch.fnmatch(index, p) for p in body.get("index_patterns", []))
            ]
            if not matching:
                continue
            best = max(matching, key=lambda body: body.get("priority", 0))
            settings = best.get("template", {}).get("settings", {})
            policy = self.policies.get(settings.get("index.lifecycle.name", ""), {})
            if any(
                "delete" in phase.get("actions", {}) for phase in policy.get("phases", {}).values()
            ):
                del self.indices[index]
                deleted.append(index)
        return deleted

    # -- setup APIs -----------------------------------------------------------------------------

    async def _index_template(self, request: web.Request) -> tuple[int, Any]:
        body = await self._record(request)
        name = request.match_info["name"]
        if request.method in ("PUT", "POST"):
            self.templates[name] = body
            return 200, {"acknowledged": True}
        if name not in self.templates:
            return 404, _error(404, "resource_not_found_exception", f"index template [{name}]")
        if request.method == "DELETE":
            del self.templates[name]
            return 200, {"acknowledged": True}
        return 200, {"index_templates": [{"name": name, "index_template": self.templates[name]}]}

    async def _ilm_policy(self, request: web.Request) -> tuple[int, Any]:
        body = await self._record(request)
        name = request.match_info["name"]
        if request.method == "PUT":
            self.policies[name] = body["policy"]
            return 200, {"acknowledged": True}
        if name not in self.policies:
            reason = f"Lifecycle policy not found: {name}"
            return 404, _error(404, "resource_not_found_exception", reason)
        if request.method == "DELETE":
            del self.policies[name]
            return 200, {"acknowledged": True}
        return 200, {name: {"version": 1, "policy": self.policies[name]}}

    async def _api_key(self, request: web.Request) -> tuple[int, Any]:
        body = await self._record(request)
        if request.method == "GET":
            pattern = request.query.get("name", "*")
            keys = [k for k in self.api_keys if fnmatch.fnmatchcase(k["name"], pattern)]
            return 200, {"api_keys": keys}
        if request.method == "DELETE":  # invalidate, by name
            found = [k for k in self.api_keys if k["name"] == body["name"]]
            for key in found:
                key["invalidated"] = True
            ids = [k["id"] for k in found]
            return 200, {"invalidated_api_keys": ids, "previously_invalidated_api_keys": []}
        key_id, secret = secrets.token_hex(10), secrets.token_urlsafe(16)
        self.api_keys.append(
            {
                "id": key_id,
                "name": body["name"],
                "creation": int(time.time() * 1000),
                "invalidated": False,
                "metadata": body.get("metadata", {}),
                "role_descriptors": body.get("role_descriptors", {}),
            }
        )
        self._secrets[key_id] = secret
        encoded = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
        return 200, {"id": key_id, "name": body["name"], "api_key": secret, "encoded": encoded}


_RECORDED_HEADERS = {"authorization", "accept", "content-type"}
# The index privileges that grant each kind of request, as ES names them.
_WRITE = frozenset({"create_doc", "create", "index", "write", "all"})
_READ = frozenset({"read", "all"})


def _index_pattern(name: str) -> re.Pattern[str]:
    """An index name of a role as ES reads it: `*` any string, `?` any one character."""
    wildcards = {"*": ".*", "?": "."}
    return re.compile("".join(wildcards.get(ch) or re.escape(ch) for ch in name))


def _unauthorized(action: str, index: str) -> dict[str, Any]:
    reason = f"action [{action}] is unauthorized for API key on indices [{index}]"
    return {"type": "security_exception", "reason": reason}


def _unauthorized_answer(action: str, index: str) -> dict[str, Any]:
    return _error(403, "security_exception", _unauthorized(action, index)["reason"])

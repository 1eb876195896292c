"""The Elasticsearch sink: one batch's documents per `_bulk`, `op_type=create`, item by item.

Every bulk item is judged on its own (DESIGN §7): 201 = stored; 409 = a document exists at the
id: the sink fetches it (`_mget`) and counts it as stored only if it is ours (ids are
deterministic, so a repeat after a crash or a lost answer is harmless), while any other document
there, put first by someone who can write the index, is a conflict: the batch stays in the outbox
and the relay alerts (SinkConflictError); 400 = malformed, kept in the dead-letter file and
counted; 401/403 = the credentials are refused, shipping pauses; 429/5xx/anything else = tried
again later. A whole-request failure (ES down, 503, a timeout) is a retry of every document still
open. The sink remembers which documents of the current batch are settled, so a retry sends only
the rest; after a restart it forgets, and the re-sent ones answer 409 and are fetched.

Why not `helpers.async_streaming_bulk`: it retries only a fixed number of times, without jitter,
within one call, and raises on a timeout or 503 as on a malformed document. The outbox needs the
opposite: unlimited retries spread over time by the shipper, and each status handled its own way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, TransportError
from elastic_transport.client_utils import DEFAULT
from elasticsearch import ApiError, AsyncElasticsearch

from relay.core.document import Document
from relay.metrics import RelayMetrics
from relay.sinks.base import SinkConflictError, SinkError, SinkUnauthorizedError
from relay.sinks.dead_letter import DeadLetter, DeadLetterFile
from relay.sinks.documents import same_source

__all__ = ["ElasticsearchSink", "make_client"]

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Elastic's advice is bulk requests of a few MiB; a batch of many cells is split to stay there.
MAX_REQUEST_BYTES = 8 * MIB


def make_client(
    url: str,
    *,
    api_key: str | None = None,
    basic_auth: tuple[str, str] | None = None,
    ca_certs: Path | None = None,
    request_timeout: float = 30,
) -> AsyncElasticsearch:
    """The official 8.x async client, with its own retries off: ours are per item, with backoff.

    The transport's retries would resend the whole request at once, with no delay, and multiply
    every timeout by the attempt count.
    """
    return AsyncElasticsearch(
        url,
        api_key=api_key,
        basic_auth=basic_auth,
        ca_certs=str(ca_certs) if ca_certs else DEFAULT,
        request_timeout=request_timeout,
        max_retries=0,
        retry_on_timeout=False,
        http_compress=True,
    )


def _retry_reason(status: int) -> str:
    if status in (401, 403):
        return "unauthorized"
    if status == 429:
        return "throttled"
    if status >= 500:
        return "server_error"
    return "other"


def _request_size(document: Document) -> int:
    # The action line ({"create": {"_index", "_id"}}) is about 40 bytes plus the names.
    return len(orjson.dumps(document.source)) + len(document.index) + len(document.id) + 40


def _chunks(documents: Sequence[Document], max_bytes: int) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    size = 0
    for document in documents:
        cost = _request_size(document)
        if chunk and size + cost > max_bytes:
            yield chunk
            chunk, size = [], 0
        chunk.append(document)
        size += cost
    if chunk:
        yield chunk


def _operations(documents: Sequence[Document]) -> list[Mapping[str, Any]]:
    operations: list[Mapping[str, Any]] = []
    for document in documents:
        operations.append({"create": {"_index": document.index, "_id": document.id}})
        operations.append(document.source)
    return operations


class ElasticsearchSink:
    name = "elasticsearch"

    def __init__(
        self,
        client: AsyncElasticsearch,
        dead_letters: DeadLetterFile,
        metrics: RelayMetrics,
        *,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self._client = client
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._max_request_bytes = max_request_bytes
        # The batch being shipped (its first document's id) and the ids of it already stored or
        # dead-lettered: a retry sends only the others.
        self._batch: str | None = None
        self._settled: set[str] = set()

    async def ship(self, documents: Sequence[Document]) -> None:
        if documents[0].id != self._batch:
            self._batch, self._settled = documents[0].id, set()
        todo = [d for d in documents if d.id not in self._settled]
        retries: Counter[str] = Counter()
        refused: str | None = None
        conflicts: list[str] = []
        for chunk in _chunks(todo, self._max_request_bytes):
            letters: list[DeadLetter] = []
            taken: list[Document] = []
            for document, item in zip(chunk, await self._bulk(chunk), strict=True):
                status = int(item.get("status", 0))
                if status in (200, 201):
                    self._settle(document, "created")
                elif status == 409:
                    taken.append(document)
                elif status == 400:
                    letters.append(DeadLetter(document, status, item.get("error")))
                else:
                    reason = _retry_reason(status)
                    if reason == "unauthorized":
                        refused = f"{status} {_error_summary(item.get('error'))}"
                    self._retry(retries, reason)
            if letters:
                await self._dead_letter(letters)
            for document, found in zip(taken, await self._stored(taken), strict=True):
                if found.get("found") is True and isinstance(found.get("_source"), dict):
                    if same_source(document.source, found["_source"]):
                        self._settle(document, "exists")
                    else:
                        conflicts.append(document.id)
                        self._retry(retries, "conflict")
                elif _error_type(found.get("error")) == "security_exception":
                    refused = f"cannot read back {document.id}: {_error_summary(found['error'])}"
                    self._retry(retries, "unauthorized")
                else:  # gone since the 409 (deleted): the next attempt creates it
                    self._retry(retries, "other")
        if refused is not None:
            raise SinkUnauthorizedError(f"bulk items refused: {refused}")
        if conflicts:
            raise SinkConflictError("Elasticsearch", conflicts)
        if retries:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(retries.items()))
            raise SinkError(f"{retries.total()} documents to retry ({detail})")

    async def _bulk(self, chunk: list[Document]) -> list[dict[str, Any]]:
        """The per-item results of one `_bulk`, in request order; a failed request raises."""
        try:
            response = await self._client.bulk(operations=_operations(chunk))
        except (ApiError, TransportError) as exc:
            self._request_failed(chunk, "bulk request", exc)
        items = response.body.get("items")
        if not isinstance(items, list) or len(items) != len(chunk):
            self._failed(chunk, "other", "bulk response does not answer every document", None)
        # Each item is {"create": {...}}: the action name, then its result.
        return [next(iter(item.values())) for item in items]

    async def _stored(self, documents: list[Document]) -> list[dict[str, Any]]:
        """What Elasticsearch holds at each document's index and id (`_mget` answers, in order).

        Needs `read` on the relay's own indices: a key without it gets 403, and shipping pauses
        as for any refused credential (relay es-setup creates operator keys with it).
        """
        if not documents:
            return []
        docs = [{"_index": d.index, "_id": d.id} for d in documents]
        try:
            response = await self._client.mget(docs=docs)
        except (ApiError, TransportError) as exc:
            self._request_failed(documents, "reading back documents answered 409", exc)
        found = response.body.get("docs")
        if not isinstance(found, list) or len(found) != len(documents):
            self._failed(documents, "other", "mget response does not answer every document", None)
        return [item if isinstance(item, dict) else {} for item in found]

    def _retry(self, retries: Counter[str], reason: str) -> None:
        retries[reason] += 1
        self._metrics.sink_retries.labels(self.name, reason).inc()

    def _request_failed(
        self, chunk: list[Document], what: str, exc: ApiError | TransportError
    ) -> NoReturn:
        if isinstance(exc, ApiError):
            self._failed(chunk, _retry_reason(exc.meta.status), f"{what} failed: {exc}", exc)
        if isinstance(exc, ConnectionTimeout):
            self._failed(chunk, "timeout", f"{what} timed out: {exc}", exc)
        if isinstance(exc, TransportConnectionError):
            self._failed(chunk, "connection", f"cannot reach Elasticsearch: {exc}", exc)
        self._failed(chunk, "other", f"{what} failed: {exc}", exc)

    def _failed(
        self, chunk: list[Document], reason: str, message: str, cause: Exception | None
    ) -> NoReturn:
        self._metrics.sink_retries.labels(self.name, reason).inc(len(chunk))
        error = SinkUnauthorizedError if reason == "unauthorized" else SinkError
        raise error(message) from cause

    def _settle(self, document: Document, result: str) -> None:
        self._settled.add(document.id)
        self._metrics.sink_documents.labels(self.name, result).inc()

    async def _dead_letter(self, letters: list[DeadLetter]) -> None:
        await self._dead_letters.append(letters)
        for letter in letters:
            self._settle(letter.document, "dead_letter")
            log.error(
                "Elasticsearch rejected document %s (%d %s); kept in %s, shipping goes on",
                letter.document.id,
                letter.status,
                _error_summary(letter.error),
                self._dead_letters.path,
            )

    async def close(self) -> None:
        await self._client.close()


def _error_type(error: Any) -> str | None:
    return error.get("type") if isinstance(error, dict) else None


def _error_summary(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('type')}: {error.get('reason')}"
    return str(error)

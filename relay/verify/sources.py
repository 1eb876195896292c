"""Where `relay verify` reads documents from: an NDJSON export or the embedded store.

Each source yields documents lazily, in the order the verifier expects (origin, seq, the batch
then its summaries by i), and raises SourceError when it cannot be read. Elasticsearch is in
relay/verify/elasticsearch.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import orjson

from relay.core.document import Document
from relay.sinks.documents import ChainStart
from relay.sinks.store import EmbeddedStore
from relay.verify.errors import SourceError

__all__ = ["document_from_mapping", "ndjson_documents", "store_chain_starts", "store_documents"]


def document_from_mapping(data: object, where: str) -> Document:
    """A Document from `{"_index", "_id", "_source"}`; SourceError naming ``where`` if not."""
    if not isinstance(data, Mapping):
        raise SourceError(f"{where}: not a JSON object")
    index, doc_id, source = data.get("_index"), data.get("_id"), data.get("_source")
    if not isinstance(index, str) or not isinstance(doc_id, str) or not isinstance(source, dict):
        raise SourceError(f"{where}: not a document (needs string _index and _id, object _source)")
    return Document(index, doc_id, source)


def ndjson_documents(stream: IO[bytes], name: str) -> Iterator[Document]:
    """One document per non-blank line of ``stream`` (as written by `relay export`)."""
    try:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                data: Any = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise SourceError(f"{name}:{number}: not JSON: {exc}") from exc
            yield document_from_mapping(data, f"{name}:{number}")
    except OSError as exc:
        raise SourceError(f"cannot read {name}: {exc}") from exc


def _open_store(path: Path) -> tuple[Path, EmbeddedStore]:
    """The embedded store at ``path`` (store.sqlite or the data_dir), read-only."""
    if path.is_dir():
        path = path / "store.sqlite"
    try:
        return path, EmbeddedStore(path, readonly=True)
    except (FileNotFoundError, sqlite3.Error) as exc:
        raise SourceError(f"cannot open the embedded store {path}: {exc}") from exc


def store_documents(path: Path) -> Iterator[Document]:
    """Every document of the embedded store at ``path`` (store.sqlite or the data_dir)."""
    path, store = _open_store(path)
    try:
        yield from store.documents()
    except sqlite3.Error as exc:
        raise SourceError(f"cannot read the embedded store {path}: {exc}") from exc
    finally:
        store.close()


def store_chain_starts(path: Path) -> dict[str, ChainStart]:
    """Where retention left each origin's chain in the embedded store at ``path``."""
    _, store = _open_store(path)
    try:
        return store.chain_starts()
    finally:
        store.close()

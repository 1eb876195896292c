"""`relay es-setup`: prepare the lead's Elasticsearch for relay documents (DESIGN §7).

Installs, idempotently:

- an ILM policy `<prefix>retention` that deletes an index `--retention-days` after its creation
  (the indices are monthly and never rolled over, so creation age is what counts);
- index templates `<prefix>batches` and `<prefix>summaries` with explicit mappings: distributions
  as `histogram` fields (Kibana draws percentiles from them), window bounds as `date`
  (epoch_millis), the attestation material kept in `_source` only. `dynamic: false` everywhere
  but `privacy` and `stats`: a field a newer relay adds is stored, never a reason to reject;
- API keys: per operator `create_doc` + `auto_configure` + `read` on that origin's own indices
  only, `<prefix>batches-<slug>-????.??` and `<prefix>summaries-<slug>-????.??` (write new
  documents, let the monthly index be created from the template, read back its own documents to
  tell a 409 of its own re-ship from another document at its id; never overwrite, never touch
  another origin's indices), and read-only keys on `<prefix>*` for dashboards. A key whose name
  exists (and is valid) is not created again: its secret is shown only once, at creation. Two
  origins with the same slug would share indices, so their keys could write each other's: an
  operator key for an origin whose slug a live operator key (or another origin asked for)
  already has is refused, before anything is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from elastic_transport import TransportError
from elasticsearch import ApiError, AsyncElasticsearch, NotFoundError
from pydantic import TypeAdapter, ValidationError

from relay import __version__
from relay.aggregate.cells import Stats
from relay.config import SinkConfig
from relay.core.indices import origin_slug
from relay.core.vocabulary import Asset, Op, Outcome, Signal
from relay.privacy.dp_release import DpPrivacy
from relay.privacy.threshold import AggregatePrivacy
from relay.sinks.documents import own_index_patterns
from relay.sinks.elasticsearch import make_client

__all__ = [
    "SetupError",
    "SetupPlan",
    "add_arguments",
    "batch_mappings",
    "operator_role",
    "reader_role",
    "run_command",
    "run_setup",
    "summary_mappings",
]

Emit = Callable[[str], None]

_META = {"managed_by": "relay es-setup", "relay_version": __version__}
_HISTOGRAMS = ("ttfb_us", "duration_us", "throughput_bps")
_KEYWORD = {"type": "keyword"}
_LONG = {"type": "long"}
_DATE = {"type": "date", "format": "epoch_millis"}
# Kept in _source for `relay verify` and the lead API, never searched: no index, no doc values.
_STORED_ONLY = {"type": "keyword", "index": False, "doc_values": False}


def _counts(names: Any) -> dict[str, Any]:
    """An object of per-name counters, one long per value of a Literal type."""
    return {"properties": {name: _LONG for name in get_args(names)}}


def summary_mappings() -> dict[str, Any]:
    """Every field of `Cell.summary` plus the chain position and attestation."""
    return {
        "dynamic": False,
        "properties": {
            "window_start_ms": _DATE,
            "window_end_ms": _DATE,
            "node": {"properties": {"role": _KEYWORD, "id": _KEYWORD}},
            "region": _KEYWORD,
            "requests": _LONG,
            "outcomes": _counts(Outcome),
            "ops": _counts(Op),
            "signals": _counts(Signal),
            "assets": _counts(Asset),
            "bytes": _LONG,
            **{name: {"type": "histogram"} for name in _HISTOGRAMS},
            "origin": _KEYWORD,
            "seq": _LONG,
            "i": {"type": "integer"},
            "att": {"type": "object", "enabled": False},
        },
    }


def _explicit(*models: Any) -> dict[str, Any]:
    """Every field of `models` (TypedDicts of the signed header's contract) mapped explicitly: whole
    numbers as long, the rest (modes, names, ε as exact decimal text) as keyword, so that a
    `term` query on `privacy.mode` matches. Parameters or counters relay adds later are mapped
    dynamically, their strings as keyword too (_DYNAMIC_KEYWORDS), never as text."""
    properties: dict[str, Any] = {}
    for model in models:
        schema = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
        for name, field in schema["properties"].items():
            properties[name] = _LONG if field["type"] == "integer" else _KEYWORD
    return {"dynamic": True, "properties": properties}


#: Strings that appear under privacy.* or stats.* without a mapping become keywords.
_DYNAMIC_KEYWORDS = [
    {
        f"{name}_strings": {
            "path_match": f"{name}.*",
            "match_mapping_type": "string",
            "mapping": _KEYWORD,
        }
    }
    for name in ("privacy", "stats")
]


def batch_mappings() -> dict[str, Any]:
    """The signed header's fields, searchable, plus the signed bytes, signature and checkpoint."""
    return {
        "dynamic": False,
        "dynamic_templates": _DYNAMIC_KEYWORDS,
        "properties": {
            "v": {"type": "integer"},
            "type": _KEYWORD,
            "origin": _KEYWORD,
            "kid": _KEYWORD,
            "next_kid": _KEYWORD,
            "seq": _LONG,
            "window_start_ms": _DATE,
            "window_end_ms": _DATE,
            "signed_at_ms": _DATE,
            "n": _LONG,
            "root": _KEYWORD,
            "prev": _KEYWORD,
            "batch_hash": _KEYWORD,
            "schema": {"type": "integer"},
            "gap": {"type": "boolean"},
            "privacy": _explicit(AggregatePrivacy, DpPrivacy),
            "stats": _explicit(Stats),
            "signed": _STORED_ONLY,
            "sig": _STORED_ONLY,
            "checkpoint": _STORED_ONLY,
        },
    }


def operator_role(prefix: str, origin: str) -> dict[str, Any]:
    """Write, and read back, ``origin``'s own indices and no other's (DESIGN §7).

    `read` is what lets the relay fetch the document behind a 409 and compare it with its own
    (relay/sinks/elasticsearch.py); `create_doc` cannot overwrite, so an id taken by anyone else
    stays visible as a conflict instead of being lost.
    """
    return {
        "cluster": [],
        "indices": [
            {
                "names": own_index_patterns(prefix, origin),
                "privileges": ["create_doc", "auto_configure", "read"],
            }
        ],
    }


def reader_role(prefix: str) -> dict[str, Any]:
    return {
        "cluster": [],
        "indices": [{"names": [f"{prefix}*"], "privileges": ["read", "view_index_metadata"]}],
    }


class SetupError(Exception):
    """A setup relay refuses to make; nothing was changed."""


@dataclass(frozen=True)
class SetupPlan:
    index_prefix: str = "relay-"
    retention_days: int = 400
    operator_origins: tuple[str, ...] = ()
    reader_name: str | None = None

    @property
    def policy(self) -> str:
        return f"{self.index_prefix}retention"

    def templates(self) -> dict[str, dict[str, Any]]:
        settings = {
            "index.lifecycle.name": self.policy,
            "index.number_of_shards": 1,
            # One replica where there is a second node; a single-node cluster stays green.
            "index.auto_expand_replicas": "0-1",
        }
        return {
            f"{self.index_prefix}{kind}": {
                "index_patterns": [f"{self.index_prefix}{kind}-*"],
                # Above the built-in templates (100), so ours wins on any overlap.
                "priority": 200,
                # The relay's first write creates the month's index, also on a cluster whose
                # action.auto_create_index refuses other names (else: a 404, retried forever).
                "allow_auto_create": True,
                "template": {"settings": settings, "mappings": mappings},
                "meta": _META,
            }
            for kind, mappings in (("batches", batch_mappings()), ("summaries", summary_mappings()))
        }

    def lifecycle(self) -> dict[str, Any]:
        return {
            "phases": {
                "hot": {"min_age": "0ms", "actions": {}},
                "delete": {"min_age": f"{self.retention_days}d", "actions": {"delete": {}}},
            },
            "_meta": _META,
        }


async def run_setup(client: AsyncElasticsearch, plan: SetupPlan, emit: Emit) -> None:
    info = await client.info()
    emit(f"Elasticsearch {info['version']['number']} (cluster {info['cluster_name']})")
    if plan.operator_origins:
        await _check_slugs(client, plan)

    existed = await _exists(client.ilm.get_lifecycle(name=plan.policy))
    await client.ilm.put_lifecycle(name=plan.policy, policy=plan.lifecycle())
    verb = "updated" if existed else "created"
    emit(f"ILM policy {plan.policy}: {verb} (delete {plan.retention_days} days after creation)")

    for name, body in plan.templates().items():
        existed = bool(await client.indices.exists_index_template(name=name))
        await client.indices.put_index_template(name=name, **body)
        verb = "updated" if existed else "created"
        emit(f"index template {name}: {verb} (indices {body['index_patterns'][0]})")

    for origin in plan.operator_origins:
        await _api_key(
            client,
            f"{plan.index_prefix}operator:{origin}",
            operator_role(plan.index_prefix, origin),
            {"relay_role": "operator", "origin": origin},
            f"operator key for {origin} (its own indices "
            f"{', '.join(own_index_patterns(plan.index_prefix, origin))} only): put it in the "
            "relay's sink.api_key (RELAY_SINK__API_KEY)",
            emit,
        )
    if plan.reader_name is not None:
        await _api_key(
            client,
            f"{plan.index_prefix}reader:{plan.reader_name}",
            reader_role(plan.index_prefix),
            {"relay_role": "reader"},
            f"read-only key {plan.reader_name}: for dashboards and relay lead "
            "(lead.source.api_key)",
            emit,
        )


async def _check_slugs(client: AsyncElasticsearch, plan: SetupPlan) -> None:
    """SetupError if two origins (of live operator keys, or asked for) share an index slug."""
    found = await client.security.get_api_key(name=f"{plan.index_prefix}operator:*")
    now_ms = time.time() * 1000
    live = [
        key.get("metadata", {}).get("origin") for key in found["api_keys"] if _usable(key, now_ms)
    ]
    by_slug: dict[str, str] = {}
    for origin in [o for o in live if isinstance(o, str)] + list(plan.operator_origins):
        slug = origin_slug(origin)
        other = by_slug.setdefault(slug, origin)
        if other != origin:
            raise SetupError(
                f"origins {other!r} and {origin!r} share the index slug {slug!r}, so their keys "
                "could write each other's indices; give one of them another origin (nothing "
                "was changed)"
            )


async def _exists(call: Awaitable[object]) -> bool:
    try:
        await call
    except NotFoundError:
        return False
    return True


def _usable(key: dict[str, Any], now_ms: float) -> bool:
    expiration = key.get("expiration")  # epoch ms; absent for a key that never expires
    return not key.get("invalidated") and (expiration is None or expiration > now_ms)


async def _api_key(
    client: AsyncElasticsearch,
    name: str,
    role: dict[str, Any],
    metadata: dict[str, Any],
    purpose: str,
    emit: Emit,
) -> None:
    found = await client.security.get_api_key(name=name)
    live = [key for key in found["api_keys"] if _usable(key, time.time() * 1000)]
    if live:
        ids = ", ".join(key["id"] for key in live)
        emit(
            f"API key {name}: exists (id {ids}), not created again; its secret was shown when "
            "it was created. To replace it, invalidate it in Kibana (Stack Management > API "
            "keys) and run this again."
        )
        return
    created = await client.security.create_api_key(
        name=name, role_descriptors={"relay": role}, metadata={**_META, **metadata}
    )
    emit(f"API key {name}: created (id {created['id']})")
    emit(f"  {purpose}; shown only this once:")
    emit(f"  {created['encoded']}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="Elasticsearch URL, e.g. https://es:9200")
    auth = parser.add_mutually_exclusive_group()
    auth.add_argument("--api-key", help="an API key (encoded) with the privileges to set up")
    auth.add_argument("--user", help="a user such as elastic (password: --password or env)")
    parser.add_argument(
        "--password", help="password for --user (default: the ELASTIC_PASSWORD environment)"
    )
    parser.add_argument("--ca-certs", type=Path, help="CA bundle for an https URL")
    parser.add_argument("--index-prefix", default="relay-", help="default: relay-")
    parser.add_argument(
        "--retention-days", type=int, default=400, help="delete indices this old (default: 400)"
    )
    parser.add_argument(
        "--create-operator-key",
        nargs="+",
        action="extend",
        default=[],
        metavar="ORIGIN",
        help="create an API key for each operator origin, limited to its own indices",
    )
    parser.add_argument(
        "--create-reader-key", metavar="NAME", help="create a read-only API key for dashboards"
    )


def run_command(args: argparse.Namespace) -> int:
    basic_auth: tuple[str, str] | None = None
    if args.user:
        password = args.password or os.environ.get("ELASTIC_PASSWORD")
        if not password:
            print("relay es-setup: --user needs --password or ELASTIC_PASSWORD", file=sys.stderr)
            return 2
        basic_auth = (args.user, password)
    if args.retention_days < 1:
        print("relay es-setup: --retention-days must be at least 1", file=sys.stderr)
        return 2
    try:
        # The relay's own rule for index names, so a prefix set up here is one it accepts.
        SinkConfig(index_prefix=args.index_prefix)
    except ValidationError:
        print(f"relay es-setup: bad --index-prefix {args.index_prefix!r}", file=sys.stderr)
        return 2
    plan = SetupPlan(
        index_prefix=args.index_prefix,
        retention_days=args.retention_days,
        operator_origins=tuple(args.create_operator_key),
        reader_name=args.create_reader_key,
    )

    async def run() -> None:
        client = make_client(
            args.url, api_key=args.api_key, basic_auth=basic_auth, ca_certs=args.ca_certs
        )
        try:
            await run_setup(client, plan, print)
        finally:
            await client.close()

    try:
        asyncio.run(run())
    except (ApiError, TransportError, SetupError) as exc:
        print(f"relay es-setup: {exc}", file=sys.stderr)
        return 2
    return 0


def holds_template(index_prefix: str) -> dict[str, Any]:
    """The template of `<prefix>holds` (relay/lead/hold_copy.py): no lifecycle, so ILM never
    deletes it. Only what reading held documents back needs is indexed; the rest is kept in
    `_source` as it was (the documents are evidence, not something to search)."""
    return {
        "index_patterns": [f"{index_prefix}holds"],
        "priority": 200,
        "template": {
            "settings": {"index.number_of_shards": 1, "index.auto_expand_replicas": "0-1"},
            "mappings": {
                "dynamic": False,
                "properties": {
                    "origin": {"type": "keyword"},
                    "seq": {"type": "long"},
                    "i": {"type": "long"},
                },
            },
        },
        "meta": _META,
    }

"""`relay es-setup --kibana URL`: Kibana ready for relay's documents, in the same command.

After the Elasticsearch part (relay.sinks.es_setup), through Kibana's own HTTP APIs and with the
same credentials, idempotently:

- data views `<prefix>summaries` and `<prefix>batches` over `<prefix>summaries-*` and
  `<prefix>batches-*` (every origin's monthly indices), time field `window_start_ms`, made with
  the data views API (`POST /api/data_views/data_view`); one that exists is left as it is;
- a role `<prefix>dashboard-reader` for people who look at dashboards: `read` on `<prefix>*`
  and read-only Discover, Dashboard and Visualize in every space, made with Kibana's role API
  (`PUT /api/security/role/{name}`, create or update). People log in to Kibana as users (an
  API key cannot log in), so give this role to their users (docs/leads.md "Elasticsearch and
  Kibana").

Kibana refuses a write without the `kbn-xsrf` header; every request sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from relay import __version__
from relay.core.b64 import b64encode
from relay.sinks import es_setup

__all__ = ["KibanaError", "KibanaPlan", "add_arguments", "run_command", "run_kibana_setup"]

Emit = Callable[[str], None]
TIME_FIELD = "window_start_ms"
#: Read-only Kibana features a dashboard reader needs (ids as in Kibana 8's feature registry).
READER_FEATURES = ("discover", "dashboard", "visualize")


class KibanaError(Exception):
    """Kibana answered something other than what its documented API promises."""


@dataclass(frozen=True)
class KibanaPlan:
    index_prefix: str = "relay-"

    @property
    def role_name(self) -> str:
        return f"{self.index_prefix}dashboard-reader"

    def data_views(self) -> list[dict[str, Any]]:
        return [
            {
                "id": f"{self.index_prefix}{kind}",
                "title": f"{self.index_prefix}{kind}-*",
                "name": f"relay {kind}",
                "timeFieldName": TIME_FIELD,
            }
            for kind in ("summaries", "batches")
        ]

    def reader_role(self) -> dict[str, Any]:
        return {
            "description": "relay: read-only dashboards over relay documents (relay es-setup)",
            "metadata": {"managed_by": "relay es-setup", "relay_version": __version__},
            "elasticsearch": {
                "cluster": [],
                "indices": [
                    {
                        "names": [f"{self.index_prefix}*"],
                        "privileges": ["read", "view_index_metadata"],
                    }
                ],
            },
            "kibana": [
                {
                    "base": [],
                    "feature": {feature: ["read"] for feature in READER_FEATURES},
                    "spaces": ["*"],
                }
            ],
        }


async def _call(
    http: ClientSession, method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body) as resp:
        text = await resp.text()
        if resp.status in (401, 403):
            raise KibanaError(f"{method} {url}: HTTP {resp.status} (check the credentials)")
        if resp.status >= 400 and resp.status != 404:
            raise KibanaError(f"{method} {url}: HTTP {resp.status}: {text[:300]}")
        return resp.status, text


async def run_kibana_setup(http: ClientSession, url: str, plan: KibanaPlan, emit: Emit) -> None:
    """Data views and the dashboard reader role, through Kibana at ``url``."""
    base = url.rstrip("/")
    for view in plan.data_views():
        status, _ = await _call(
            http, "GET", f"{base}/api/data_views/data_view/{quote(view['id'], safe='')}"
        )
        if status == 200:
            emit(f"Kibana data view {view['id']}: exists ({view['title']}), left as it is")
            continue
        await _call(http, "POST", f"{base}/api/data_views/data_view", {"data_view": view})
        emit(f"Kibana data view {view['id']}: created ({view['title']}, time {TIME_FIELD})")
    await _call(
        http,
        "PUT",
        f"{base}/api/security/role/{quote(plan.role_name, safe='')}",
        plan.reader_role(),
    )
    emit(
        f"Kibana role {plan.role_name}: created or updated (read {plan.index_prefix}*, "
        "Discover, Dashboard and Visualize read-only); give it to the users of dashboards"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kibana",
        metavar="URL",
        help="also set up Kibana at URL: data views and a read-only dashboard role",
    )


def _headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {"kbn-xsrf": "relay-es-setup"}
    if args.api_key:
        headers["Authorization"] = f"ApiKey {args.api_key}"
    elif args.user:
        password = args.password or os.environ.get("ELASTIC_PASSWORD", "")
        token = b64encode(f"{args.user}:{password}".encode())
        headers["Authorization"] = f"Basic {token}"
    return headers


def run_command(args: argparse.Namespace) -> int:
    """`relay es-setup`: Elasticsearch first; then, with --kibana, Kibana."""
    code = es_setup.run_command(args)
    if code != 0 or not args.kibana:
        return code

    async def run() -> None:
        # The same CA bundle as for Elasticsearch (one cluster, one CA, as a rule).
        context = ssl.create_default_context(cafile=args.ca_certs) if args.ca_certs else None
        async with ClientSession(
            connector=TCPConnector(ssl=context) if context is not None else None,
            headers=_headers(args),
            timeout=ClientTimeout(total=60),
        ) as http:
            await run_kibana_setup(http, args.kibana, KibanaPlan(args.index_prefix), print)

    try:
        asyncio.run(run())
    except (KibanaError, ClientError, TimeoutError) as exc:
        print(f"relay es-setup: Kibana: {exc}", file=sys.stderr)
        return 2
    return 0

"""The lead's commands besides serving: `relay hold add|list|release`, `relay lead report`, and
`relay retention` (the embedded store's retention, which honours the lead's holds).

Exit status: 0 done, 1 refused (a hold over batches that are missing or did not verify, a copy
that does not verify), 2 could not run (configuration, key). The lead service and the
Elasticsearch client are imported when a command runs, not whenever `relay` starts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from relay.attest.keys import OperatorKey
from relay.config import Settings, load_settings
from relay.core.clock import wall_clock_ms
from relay.lead.holds import (
    HoldBook,
    HoldError,
    check_hold,
    held_batches,
    make_hold,
    parse_seqs,
)
from relay.lead.statement import StatementError
from relay.lead.timerange import RangeError, parse_range
from relay.sinks.retention import apply_retention, describe
from relay.sinks.store import EmbeddedStore

if TYPE_CHECKING:
    from relay.lead.report import Format

__all__ = ["add_hold_command", "add_report_command", "add_retention_command"]

Clock = Callable[[], int]


def _config(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    # SUPPRESS under `relay lead`: a subcommand's default must not erase `relay lead --config`.
    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS if suppress else None,
        help="YAML config file (env RELAY_* overrides it)",
    )


def holds_path(settings: Settings) -> Path:
    return settings.data_dir / "holds.sqlite"


# -- relay hold -----------------------------------------------------------------------------------


def add_hold_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hold = commands.add_parser(
        "hold", help="lead side: keep batches that are evidence in a dispute past retention"
    )
    actions = hold.add_subparsers(dest="hold_command", required=True)
    add = actions.add_parser("add", help="hold a range of verified batches (signed by lead.key)")
    _config(add)
    add.add_argument("--origin", required=True, help="the operator origin")
    add.add_argument("--seqs", required=True, metavar="A-B", help="batch seqs, inclusive")
    add.add_argument("--reason", required=True, help="why (kept in the signed hold)")
    add.set_defaults(run=_cmd_hold_add)
    listing = actions.add_parser("list", help="print every hold and release, signed, as JSON")
    _config(listing)
    listing.set_defaults(run=_cmd_hold_list)
    release = actions.add_parser("release", help="release a hold (signed by lead.key)")
    _config(release)
    release.add_argument("id", help="the hold's id (h-…)")
    release.add_argument("--reason", required=True, help="why (kept in the signed release)")
    release.set_defaults(run=_cmd_hold_release)


async def hold_add(
    settings: Settings, origin: str, seqs: str, reason: str, clock: Clock = wall_clock_ms
) -> dict[str, object]:
    """Make, copy (on Elasticsearch) and record a hold; HoldError if it cannot be held."""
    from relay.lead.hold_copy import copy_hold
    from relay.lead.server import build_service, open_source
    from relay.sinks.elasticsearch import make_client

    key = OperatorKey.load(settings.lead_key_path)
    first, last = parse_seqs(seqs)
    source = open_source(settings)
    try:
        service = await build_service(settings, source, clock)
        prev, hashes = await held_batches(service, origin, first, last)
        registry = service.verification.current.registry
    finally:
        await source.close()
    now_ms = clock()
    hold = make_hold(
        key,
        origin=origin,
        first=first,
        last=last,
        prev=prev,
        batch_hashes=hashes,
        reason=reason,
        now_ms=now_ms,
    )
    copied = None
    lead_source = settings.lead.source
    if lead_source.type == "elasticsearch":
        assert lead_source.url is not None
        client = make_client(
            lead_source.url,
            api_key=lead_source.api_key.get_secret_value() if lead_source.api_key else None,
            ca_certs=lead_source.ca_certs,
        )
        try:
            copied = await copy_hold(client, lead_source.index_prefix, hold, registry, now_ms)
        finally:
            await client.close()
    book = HoldBook(holds_path(settings))
    try:
        book.record(hold)
    finally:
        book.close()
    return {**hold.to_dict(), "documents_copied": copied}


def _cmd_hold_add(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        result = asyncio.run(hold_add(settings, args.origin, args.seqs, args.reason))
    except HoldError as exc:
        print(f"relay hold add: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_hold_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    path = holds_path(settings)
    key = OperatorKey.load(settings.lead_key_path) if settings.lead_key_path.exists() else None
    holds = []
    if path.exists():
        book = HoldBook(path, readonly=True)
        try:
            for hold in book.holds():
                entry = hold.to_dict()
                if key is not None:
                    try:
                        check_hold(hold, key.verifier)
                        entry["signature"] = "ok"
                    except StatementError as exc:
                        entry["signature"] = f"bad: {exc}"
                holds.append(entry)
        finally:
            book.close()
    print(orjson.dumps({"holds": holds}, option=orjson.OPT_INDENT_2).decode())
    return 0


def _cmd_hold_release(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    key = OperatorKey.load(settings.lead_key_path)
    book = HoldBook(holds_path(settings))
    try:
        hold = book.release(key, args.id, args.reason, wall_clock_ms())
    except HoldError as exc:
        print(f"relay hold release: {exc}", file=sys.stderr)
        return 1
    finally:
        book.close()
    print(orjson.dumps(hold.to_dict(), option=orjson.OPT_INDENT_2).decode())
    return 0


# -- relay lead report ----------------------------------------------------------------------------


def add_report_command(lead: argparse.ArgumentParser) -> None:
    actions = lead.add_subparsers(dest="lead_command")
    report = actions.add_parser(
        "report", help="a period report per node, signed by lead.key (re-check: relay verify)"
    )
    _config(report, suppress=True)
    report.add_argument("--from", dest="start", required=True, help="epoch ms or RFC 3339")
    report.add_argument("--to", dest="end", required=True, help="epoch ms or RFC 3339 (excluded)")
    report.add_argument("--format", choices=("md", "csv", "json"), default="md")
    report.add_argument("--out", type=Path, help="file to write (default: standard output)")
    report.set_defaults(run=_cmd_report)


async def make_report(
    settings: Settings, start: str, end: str, fmt: Format, clock: Clock = wall_clock_ms
) -> str:
    from relay.lead.report import build_report, render_report
    from relay.lead.server import build_service, open_source

    key = OperatorKey.load(settings.lead_key_path)
    now_ms = clock()
    time_range = parse_range(start, end, now_ms)
    source = open_source(settings)
    try:
        service = await build_service(settings, source, clock)
        envelope = await build_report(service, time_range, key, now_ms)
    finally:
        await source.close()
    return render_report(envelope, fmt)


def _cmd_report(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        text = asyncio.run(make_report(settings, args.start, args.end, args.format))
    except RangeError as exc:
        print(f"relay lead report: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
    return 0


# -- relay retention ------------------------------------------------------------------------------


def add_retention_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retention = commands.add_parser(
        "retention",
        help="embedded store: delete batches older than store.retention_days, except held ones",
    )
    _config(retention)
    retention.set_defaults(run=_cmd_retention)


def _cmd_retention(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    days = settings.store.retention_days
    if days is None:
        print("relay retention: store.retention_days is not set; nothing deleted")
        return 0
    path = settings.data_dir / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no embedded store at {path}")
    store = EmbeddedStore(path)
    with contextlib.closing(store):
        results = apply_retention(
            store,
            now_ms=wall_clock_ms(),
            retention_days=days,
            held=HoldBook.active_in(holds_path(settings)),
        )
    for result in results:
        print(describe(result))
    if not results:
        print("relay retention: nothing older than the retention period")
    return 0

"""`relay witness`: run the witness, or read what it stored.

``relay witness [--config FILE]`` polls forever; ``--once`` polls one round and exits 1 if the
store holds any finding (for cron and tests); ``--print-key`` prints the cosigner key auditors
pass to `relay verify --witness-key`; ``--latest ORIGIN`` prints the latest cosigned checkpoint
of an origin, the note auditors pass to `relay verify --checkpoint`.

Files live in ``<data_dir>/witness/`` (created 0700): ``witness.key`` (generated on first start,
0600, unless ``witness.key`` names another file) and ``witness.sqlite``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from pathlib import Path

from relay.attest.cosignature import CosignerKey
from relay.config import Settings, load_settings
from relay.logs import configure_logging
from relay.serve import load_or_create_key
from relay.witness.store import WitnessStore
from relay.witness.witness import Witness

__all__ = ["add_witness_command"]

log = logging.getLogger("relay.witness")


def add_witness_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    witness = commands.add_parser(
        "witness",
        help="cosign the registry operators' checkpoints, and flag forks",
        description="Poll every registry operator that has a url, check each new checkpoint "
        "is consistent with the last one cosigned, cosign it (c2sp.org/tlog-cosignature).",
    )
    witness.add_argument("--config", type=Path, help="YAML config file (env RELAY_* overrides it)")
    action = witness.add_mutually_exclusive_group()
    action.add_argument("--once", action="store_true", help="poll one round, print findings")
    action.add_argument("--print-key", action="store_true", help="print the witness key")
    action.add_argument("--latest", metavar="ORIGIN", help="print ORIGIN's latest cosigned note")
    witness.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    configure_logging(settings.log.format, settings.log.level)
    directory = settings.data_dir / "witness"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = load_or_create_key(
        settings.witness.key or directory / "witness.key", settings.witness.name
    )
    if args.print_key:
        print(CosignerKey.of(key).encode())
        return 0
    store = WitnessStore(directory / "witness.sqlite")
    try:
        if args.latest is not None:
            note = store.latest_note(args.latest)
            if note is None:
                print(f"relay witness: nothing cosigned for {args.latest}", file=sys.stderr)
                return 1
            sys.stdout.write(note)
            return 0
        witness = Witness(
            key,
            store,
            settings.registry_path,
            timeout_seconds=settings.witness.timeout_seconds,
        )
        if args.once:
            return asyncio.run(_once(witness, store))
        log.info("witness %s polling every %ss", CosignerKey.of(key).encode(), _interval(settings))
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(witness.run(_interval(settings)))
        return 0
    finally:
        store.close()


def _interval(settings: Settings) -> float:
    return settings.witness.poll_interval_seconds


async def _once(witness: Witness, store: WitnessStore) -> int:
    async with witness.session() as session:
        await witness.poll_once(session)
    findings = store.findings()
    for finding in findings:
        print(f"{finding.code}: {finding.origin} size {finding.size}: {finding.message}")
    return 1 if findings else 0

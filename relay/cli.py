"""`relay`: the single command-line entry point (DESIGN §2, pinned)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from relay import __version__
from relay.attest.errors import AttestError
from relay.attest.keys import OperatorKey
from relay.config import ConfigError, Settings, load_settings
from relay.ingest.client_config import RenderedClientConfig
from relay.ingest.http import create_app, create_operator_app, runner_options
from relay.ingest.server import make_runner
from relay.lead.commands import add_hold_command, add_report_command, add_retention_command
from relay.lead.report import recheck_report
from relay.logs import configure_logging
from relay.registry import RegistryError
from relay.serve import OperatorRelay, tune_gc
from relay.sinks.es_setup import add_arguments as add_es_setup_arguments
from relay.sinks.kibana_setup import add_arguments as add_kibana_arguments
from relay.sinks.kibana_setup import run_command as run_es_setup
from relay.sinks.store import EmbeddedStore
from relay.verify.command import add_verify_command
from relay.witness.command import add_witness_command

__all__ = ["main"]

log = logging.getLogger("relay")


class ListenError(Exception):
    """A listener could not bind (the port is taken, the address is not ours)."""


async def _listen(runner: web.AppRunner, host: str, port: int, **site: Any) -> None:
    try:
        await web.TCPSite(runner, host, port, **site).start()
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


async def _serve(settings: Settings, config_path: Path | None) -> None:
    relay = OperatorRelay(settings)
    await relay.start()
    runner = make_runner(create_app(relay), **runner_options(relay))
    operator_runner = make_runner(create_operator_app(relay), access_log=None)
    metrics_listen = settings.metrics.listen
    try:
        await runner.setup()
        await _listen(
            runner,
            settings.listen.host,
            settings.listen.port,
            shutdown_timeout=settings.shutdown_timeout,
        )
        await operator_runner.setup()
        await _listen(operator_runner, metrics_listen.host, metrics_listen.port)
    except ListenError:
        # Nothing was accepted yet: seal what is due, close the WAL and outbox, then say why.
        await runner.cleanup()
        await operator_runner.cleanup()
        await relay.stop()
        raise
    log.info(
        "relay %s listening on http://%s:%d, metrics on http://%s:%d (origin %s, sink %s)",
        __version__,
        settings.listen.host,
        settings.listen.port,
        metrics_listen.host,
        metrics_listen.port,
        settings.origin,
        settings.sink.type,
    )

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        try:
            fresh = load_settings(config_path)
        except ConfigError as exc:
            log.error("SIGHUP: config not reloaded: %s", exc)
            return
        relay.client_config = RenderedClientConfig(fresh.client)
        log.info("SIGHUP: client config reloaded (etag %s)", relay.client_config.etag)

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting down: no new events, sealing what is due, flushing")
    relay.shutting_down = True
    await runner.cleanup()
    await relay.stop()
    await operator_runner.cleanup()
    log.info("stopped")


def _cmd_serve(args: argparse.Namespace) -> int:
    # Every file relay writes (WAL segments, salts, outbox and store with their -wal/-shm,
    # dead letters, an ndjson sink, the registry) is the operator's alone: 0600, whatever
    # umask the shell or service manager left.
    os.umask(0o077)
    settings = load_settings(args.config)
    configure_logging(settings.log.format, settings.log.level)
    tune_gc()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(settings, args.config))
    return 0


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = OperatorKey.generate(args.origin)
    key.save(args.out)
    print(key.verifier.encode())
    print(f"private key written to {args.out} (mode 0600); keep it secret", file=sys.stderr)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    path: Path = args.store
    if path.is_dir():
        path = path / "store.sqlite"
    store = EmbeddedStore(path, readonly=True)
    out = sys.stdout.buffer
    try:
        for document in store.documents(args.origin):
            out.write(document.to_line())
        out.flush()
    except BrokenPipeError:
        # A reader such as `head` went away: not an error of the export.
        sys.stderr.close()
    finally:
        store.close()
    return 0


def _cmd_bench_lead(args: argparse.Namespace) -> int:
    import tempfile

    from relay.bench.lead import run_lead_bench

    shape = {"days": args.days, "nodes": args.nodes, "operators": args.operators}
    if args.dir is not None:  # kept, and measured again by the next run with this --dir
        args.dir.mkdir(parents=True, exist_ok=True)
        report = run_lead_bench(args.out, args.dir, **shape)
    else:
        with tempfile.TemporaryDirectory(prefix="relay-bench-lead-") as tmp:
            report = run_lead_bench(args.out, Path(tmp), **shape)
    setup, lead = report["setup"], report["lead"]
    print(
        f"{setup['store_summaries']} summaries ({setup['days']:g} days, "
        + ("kept" if setup["build_s"] is None else f"built in {setup['build_s']} s")
        + "); "
        f"start-up {lead['first_start_s']} s (verify {lead['first_start_verify_s']} s, roll-up "
        f"{lead['rollup_summaries_per_s']} summaries/s), restart {lead['restart_s']} s; "
        f"/v1/nodes 24 h {lead['nodes_24h_s']} s, {setup['days']:g} days "
        f"{lead['nodes_all_days_s']} s; series {lead['series_all_days_step_1h_s']} s; "
        f"report: {args.out}"
    )
    for target, met in report["targets"].items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.lead:
        return _cmd_bench_lead(args)
    from relay.bench.run import run_bench

    report = run_bench(args.out, args.duration, args.connections, args.quick)
    relay, ceiling = report["relay"], report["ceiling_parse_only"]
    print(
        f"relay {relay['events_per_s']:.0f} events/s, ceiling {ceiling['events_per_s']:.0f} "
        f"events/s, ratio {report['ratio_to_ceiling']}; half-load p99 "
        f"{report['half_load']['p99_ms']} ms; report: {args.out}"
    )
    for target, met in report["targets"].items():
        print(f"  {'met' if met else 'NOT met'}: {target}")
    return 0


def _cmd_lead(args: argparse.Namespace) -> int:
    from relay.lead.server import run_lead

    settings = load_settings(args.config)
    configure_logging(settings.log.format, settings.log.level)
    asyncio.run(run_lead(settings))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the operator relay")
    serve.add_argument("--config", type=Path, help="YAML config file (env RELAY_* overrides it)")
    serve.set_defaults(run=_cmd_serve)

    keygen = commands.add_parser("keygen", help="create an ed25519 operator key")
    keygen.add_argument("--origin", required=True, help="the origin name the key speaks for")
    keygen.add_argument(
        "--out",
        type=Path,
        default=Path("operator.key"),
        help="private key file to create (default: ./operator.key)",
    )
    keygen.set_defaults(run=_cmd_keygen)

    export = commands.add_parser("export", help="print stored documents as NDJSON")
    export.add_argument(
        "--store", type=Path, required=True, help="store.sqlite, or the data_dir holding it"
    )
    export.add_argument("--origin", help="only this origin's documents")
    export.set_defaults(run=_cmd_export)

    lead = commands.add_parser("lead", help="the lead API and dashboard over verified data")
    lead.add_argument("--config", type=Path, help="YAML config file (env RELAY_* overrides it)")
    lead.set_defaults(run=_cmd_lead)
    add_report_command(lead)
    add_hold_command(commands)
    add_retention_command(commands)

    es_setup = commands.add_parser(
        "es-setup",
        help="lead side: Elasticsearch index templates, retention, API keys; Kibana data views",
    )
    add_es_setup_arguments(es_setup)
    add_kibana_arguments(es_setup)
    es_setup.set_defaults(run=run_es_setup)

    add_verify_command(commands, recheck_report)
    add_witness_command(commands)
    bench = commands.add_parser("bench", help="measure ingest against its parse-only ceiling")
    bench.add_argument("--out", type=Path, default=Path("bench-report.json"))
    bench.add_argument("--duration", type=int, default=10, help="seconds per load run")
    bench.add_argument("--connections", type=int, default=32)
    bench.add_argument("--quick", action="store_true", help="smaller memory/statsd runs")
    bench.add_argument(
        "--lead", action="store_true", help="instead: build a lead's store and time `relay lead`"
    )
    bench.add_argument("--days", type=float, default=30, help="--lead: days of 5-minute windows")
    bench.add_argument("--nodes", type=int, default=100, help="--lead: nodes")
    bench.add_argument("--operators", type=int, default=3, help="--lead: operators")
    bench.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="--lead: build the store there and keep it; a store kept there is measured again "
        "(default: a temporary directory)",
    )
    bench.set_defaults(run=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (ConfigError, RegistryError, AttestError, FileNotFoundError, ListenError) as exc:
        print(f"relay {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())

"""`relay lead`: verify what the source holds, then serve the lead API and dashboard."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry

from relay.config import Settings
from relay.core.clock import wall_clock_ms
from relay.lead.api import create_lead_app
from relay.lead.es_source import ElasticsearchSource
from relay.lead.notify import Notifier
from relay.lead.service import LeadService
from relay.lead.source import Source
from relay.lead.store_source import ROLLUP_FILE, StoreSource
from relay.lead.verification import CHECKPOINT_FILE, VerificationCache
from relay.lead.watch import NodeWatch

__all__ = ["build_service", "open_source", "run_lead"]

log = logging.getLogger("relay.lead")


def open_source(settings: Settings) -> Source:
    source = settings.lead.source
    if source.type == "store":
        # The lead's rollups sit beside the store they sum (the store stays read-only to it).
        return StoreSource(
            settings.data_dir / "store.sqlite", rollups=settings.data_dir / ROLLUP_FILE
        )
    assert source.url is not None  # LeadSourceConfig requires it for elasticsearch
    return ElasticsearchSource(
        source.url,
        api_key=source.api_key.get_secret_value() if source.api_key else None,
        index_prefix=source.index_prefix,
        ca_certs=source.ca_certs,
    )


async def build_service(
    settings: Settings, source: Source, clock: Callable[[], int] = wall_clock_ms
) -> LeadService:
    """The service over ``source``, with its first verification done."""
    # With the embedded store, the last result is kept beside the rollups (a restart takes it).
    kept = settings.data_dir / CHECKPOINT_FILE if isinstance(source, StoreSource) else None
    cache = VerificationCache(
        source,
        settings.registry_path,
        clock=clock,
        interval_seconds=settings.lead.verify_interval_seconds,
        checkpoint=kept,
    )
    await cache.refresh()
    return LeadService(source, cache, settings.lead.thresholds, clock)


async def run_lead(settings: Settings) -> None:
    lead = settings.lead
    source = open_source(settings)
    try:
        service = await build_service(settings, source)
        tokens = {name: token.get_secret_value() for name, token in lead.api_tokens.items()}
        watch = NodeWatch(service, lead.metrics)
        counters = CollectorRegistry(auto_describe=True)
        notifier = Notifier(lead.notify, watch, counters)
        app = create_lead_app(service, tokens, watch, counters)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, lead.listen.host, lead.listen.port)
        await site.start()
        refresher = asyncio.get_running_loop().create_task(service.verification.run())
        seeding = asyncio.get_running_loop().create_task(watch.seed())
        await notifier.start()
        notifying = (
            asyncio.get_running_loop().create_task(notifier.run()) if lead.notify.webhooks else None
        )
        log.info(
            "relay lead listening (source %s%s)",
            lead.source.type,
            ", bearer tokens required" if tokens else "",
        )
        print(f"dashboard: http://{lead.listen.host}:{lead.listen.port}/dashboard", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        for task in (refresher, seeding, notifying):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await notifier.close()
        await runner.cleanup()
    finally:
        await source.close()

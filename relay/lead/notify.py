"""Notifications without Prometheus: `relay lead` posts status changes to webhooks.

Every `lead.notify.interval_seconds` the lead takes a relay.lead.watch snapshot (verified data,
the trailing `lead.metrics.range_seconds`) and compares it with the previous one. A message goes
out once per change, never per refresh:

- a node entered down or degraded, moved between the two, or left them (to healthy or unknown);
- an operator's verification findings gained a code they did not have, or cleared.

The first comparison after a start reports what is already wrong (a node down, findings), so a
restarted lead repeats those once. Each webhook has its own queue: a message is retried on no
answer, 429 and 5xx with doubling, jittered backoff up to `attempts` tries, and at most
`max_per_hour` messages go to one webhook per hour; the rest are dropped and counted
(`relay_lead_notifications_total{result="capped"}`), never queued without bound.

Bodies: `json` is the generic form below (with `text`, which Slack also reads); `discord`
sends `{"content": text}` and `slack` `{"text": text}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout
from prometheus_client import CollectorRegistry, Counter

from relay.config import LeadNotifyConfig, WebhookConfig
from relay.lead.watch import NodeWatch, Snapshot

__all__ = ["Notifier", "Watched", "compare", "payload"]

log = logging.getLogger(__name__)

ALERTING = ("down", "degraded")
HOUR_SECONDS = 3600.0
#: Longest wait between tries, whatever Retry-After asks for.
MAX_BACKOFF_SECONDS = 300.0
#: Jitter only spreads retries in time; like all of relay's randomness it is not seedable.
_JITTER = secrets.SystemRandom()


@dataclass(frozen=True, slots=True)
class Watched:
    """What the last comparison saw: each node's status and finding codes per operator."""

    nodes: dict[tuple[str, str], str] = field(default_factory=dict)
    findings: dict[str, frozenset[str]] = field(default_factory=dict)


def _node_name(role: str, node_id: str) -> str:
    return f"{role} {node_id}"


def _minutes(snapshot: Snapshot) -> str:
    return f"{(snapshot.time_range.to_ms - snapshot.time_range.from_ms) // 60_000} min"


def _alerting(status: str) -> str | None:
    return status if status in ALERTING else None


def compare(before: Watched | None, snapshot: Snapshot) -> tuple[Watched, list[dict[str, Any]]]:
    """What is watched now, and one message (generic JSON form) per change since ``before``."""
    previous = before or Watched()
    nodes, node_messages = _node_changes(previous, snapshot)
    findings, finding_messages = _finding_changes(previous, snapshot)
    messages = node_messages + finding_messages
    for message in messages:
        message["at_ms"] = snapshot.at_ms
    return Watched(nodes, findings), messages


def _node_changes(
    previous: Watched, snapshot: Snapshot
) -> tuple[dict[tuple[str, str], str], list[dict[str, Any]]]:
    """Each node's status now, and a message for each that went into or out of alerting."""
    messages: list[dict[str, Any]] = []
    listed = {(node.role, node.id): node for node in snapshot.nodes}
    nodes: dict[tuple[str, str], str] = {key: n.figures["status"] for key, n in listed.items()}
    for key in sorted(previous.nodes.keys() | nodes.keys()):
        # None: not seen before (the first comparison after a start, or a new node).
        seen_as = previous.nodes.get(key)
        was, now = seen_as or "unknown", nodes.get(key, "unknown")
        if _alerting(was) == _alerting(now):
            continue
        node = listed.get(key)
        reasons: list[str] = [] if node is None else node.figures["reasons"]
        name, span = _node_name(*key), _minutes(snapshot)
        if now in ALERTING:
            text = f"{name} is {now} (last {span}): {'; '.join(reasons)}"
        else:
            text = f"{name} is no longer {was}: now {now} (last {span})"
        messages.append(
            {
                "event": "node_status",
                "node": {"role": key[0], "id": key[1]},
                "from": seen_as,
                "to": now,
                "reasons": reasons,
                "requests": None if node is None else node.figures["requests"],
                "success_ratio": None if node is None else node.figures["success_ratio"],
                "text": text,
            }
        )
    return nodes, messages


def _finding_changes(
    previous: Watched, snapshot: Snapshot
) -> tuple[dict[str, frozenset[str]], list[dict[str, Any]]]:
    """The finding codes per origin now, and a message for each origin with new or no codes."""
    messages: list[dict[str, Any]] = []
    findings: dict[str, frozenset[str]] = {}
    counts = {op.origin: op.findings for op in snapshot.operators if op.findings}
    if snapshot.other_findings:
        counts[""] = snapshot.other_findings
    for origin, by_code in counts.items():
        findings[origin] = frozenset(by_code)
    for origin in sorted(previous.findings.keys() | findings.keys()):
        had, has = previous.findings.get(origin, frozenset()), findings.get(origin, frozenset())
        new = sorted(has - had)
        if not new and has:
            continue
        who = f"operator {origin}" if origin else "documents of no registered operator"
        if new:
            listing = ", ".join(f"{code} ×{counts[origin][code]}" for code in sorted(has))
            text = f"verification findings for {who}: {listing}"
        else:
            text = f"verification findings for {who} cleared"
        messages.append(
            {
                "event": "findings",
                "origin": origin,
                "codes": dict(sorted(counts.get(origin, {}).items())),
                "new_codes": new,
                "text": text,
            }
        )
    return findings, messages


def payload(message: dict[str, Any], form: str) -> dict[str, Any]:
    """The body a webhook of this format gets."""
    if form == "discord":
        return {"content": message["text"]}
    if form == "slack":
        return {"text": message["text"]}
    return message


class _Webhook:
    """One webhook's queue, cap and retries."""

    def __init__(
        self,
        index: int,
        config: WebhookConfig,
        notify: LeadNotifyConfig,
        outcomes: Counter,
        retries: Counter,
        monotonic: Callable[[], float],
    ) -> None:
        self.name = str(index)
        self.config = config
        self.notify = notify
        self.outcomes = outcomes
        self.retries = retries
        self.monotonic = monotonic
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent_at: deque[float] = deque()

    def _capped(self) -> bool:
        now = self.monotonic()
        while self.sent_at and now - self.sent_at[0] >= HOUR_SECONDS:
            self.sent_at.popleft()
        return len(self.sent_at) >= self.notify.max_per_hour

    async def _post(self, http: ClientSession, body: dict[str, Any]) -> tuple[bool, float | None]:
        """(delivered, seconds to wait before the next try; None = do not try again)."""
        url = self.config.url.get_secret_value()
        try:
            async with http.post(url, json=body) as resp:
                if 200 <= resp.status < 300:
                    return True, None
                if resp.status == 429 or resp.status >= 500:
                    after = resp.headers.get("Retry-After", "")
                    return False, float(after) if after.isdigit() else 0.0
                log.warning("webhook %s refused a notification: HTTP %d", self.name, resp.status)
                return False, None
        except (ClientError, TimeoutError) as exc:
            log.warning("webhook %s: %s", self.name, type(exc).__name__)
            return False, 0.0

    async def deliver(self, http: ClientSession, message: dict[str, Any]) -> None:
        if self._capped():
            log.warning(
                "webhook %s: over %d per hour, dropped", self.name, self.notify.max_per_hour
            )
            self.outcomes.labels(self.name, "capped").inc()
            return
        self.sent_at.append(self.monotonic())
        body = payload(message, self.config.format)
        backoff = self.notify.retry_initial_seconds
        for attempt in range(1, self.notify.attempts + 1):
            delivered, wait = await self._post(http, body)
            if delivered:
                self.outcomes.labels(self.name, "sent").inc()
                return
            if wait is None or attempt == self.notify.attempts:
                break
            self.retries.labels(self.name).inc()
            await asyncio.sleep(
                min(MAX_BACKOFF_SECONDS, max(wait, _JITTER.uniform(backoff / 2, backoff)))
            )
            backoff *= 2
        self.outcomes.labels(self.name, "failed").inc()

    async def run(self, http: ClientSession) -> None:
        while True:
            message = await self.queue.get()
            try:
                await self.deliver(http, message)
            except Exception:
                log.exception("webhook %s: notification failed", self.name)
            finally:
                self.queue.task_done()


class Notifier:
    def __init__(
        self,
        config: LeadNotifyConfig,
        watch: NodeWatch,
        registry: CollectorRegistry,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.watch = watch
        outcomes = Counter(
            "relay_lead_notifications",
            "Webhook notifications by webhook (its place in lead.notify.webhooks) and result "
            "(sent, failed, capped).",
            ["webhook", "result"],
            registry=registry,
        )
        retries = Counter(
            "relay_lead_notification_retries",
            "Webhook posts tried again (no answer, 429, 5xx).",
            ["webhook"],
            registry=registry,
        )
        self.webhooks = [
            _Webhook(i, hook, config, outcomes, retries, monotonic)
            for i, hook in enumerate(config.webhooks)
        ]
        self.watched: Watched | None = None
        self._http: ClientSession | None = None
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._http = ClientSession(timeout=ClientTimeout(total=self.config.timeout_seconds))
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(hook.run(self._http)) for hook in self.webhooks]

    async def evaluate(self) -> list[dict[str, Any]]:
        """Compare with the last snapshot; queue and return the messages for what changed."""
        self.watched, messages = compare(self.watched, await self.watch.snapshot())
        for message in messages:
            log.info("notification: %s", message["text"])
            for hook in self.webhooks:
                hook.queue.put_nowait(message)
        return messages

    async def drain(self) -> None:
        """Wait until every queued message is delivered or given up on."""
        for hook in self.webhooks:
            await hook.queue.join()

    async def run(self) -> None:
        while True:
            try:
                await self.evaluate()
            except Exception:
                log.exception("notifications: comparing node health failed")
            await asyncio.sleep(self.config.interval_seconds)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()

"""Verified node and operator health right now: what /metrics exposes and notifications compare.

A snapshot judges every node on the trailing `lead.metrics.range_seconds` of sealed windows of
verified batches, with the lead's own status function (relay.lead.health.figures), exactly as
the dashboard would over that range. A node that had verified traffic within
`remember_seconds` stays listed after it falls silent, with zero requests and a growing age, so
"silent" can be seen and alerted on: the watch remembers what its snapshots saw, and `seed` reads
that far back once after a start; every snapshot reads only the range. So the nodes listed are
at most those published in verified batches over `remember_seconds`, capped at `max_nodes` (the
busiest; the rest are counted in `omitted`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from relay.config import LeadMetricsConfig
from relay.lead.health import Figures, figures
from relay.lead.service import LeadService
from relay.lead.source import CellQuery, GroupKey
from relay.lead.tally import Tally
from relay.lead.timerange import TimeRange
from relay.lead.verification import Verification

__all__ = ["NodeHealth", "NodeWatch", "OperatorHealth", "Snapshot", "operator_health"]

NodeKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class NodeHealth:
    role: str
    id: str
    #: relay.lead.health.figures over the range (requests 0 and status unknown when silent).
    figures: Figures
    #: The same per region the node had traffic in (within `remember_seconds`).
    regions: dict[str, Figures]
    #: End of the node's newest verified window seen, in the range or before it.
    last_window_end_ms: int | None
    region_last_window_end_ms: dict[str, int]


@dataclass(frozen=True, slots=True)
class OperatorHealth:
    origin: str
    batches_verified: int
    batches_failed: int
    findings: dict[str, int]
    head_seq: int | None
    head_window_end_ms: int | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    at_ms: int
    time_range: TimeRange
    nodes: list[NodeHealth]
    omitted: int
    operators: list[OperatorHealth]
    #: Findings of no registered operator (an unregistered origin, or none), by code.
    other_findings: dict[str, int]
    verification: Verification


def operator_health(
    v: Verification,
) -> tuple[list[OperatorHealth], dict[str, int]]:
    """Per registered operator its batch counts, findings by code and verified head."""
    registered = sorted({entry.origin for entry in v.registry.operators})
    findings: dict[str, dict[str, int]] = {origin: {} for origin in registered}
    other: dict[str, int] = {}
    for finding in v.report.findings:
        counts = findings.get(finding.origin or "", other)
        counts[finding.code] = counts.get(finding.code, 0) + 1
    operators = []
    for origin in registered:
        totals = v.report.origins.get(origin)
        head = v.report.heads.get(origin)
        operators.append(
            OperatorHealth(
                origin=origin,
                batches_verified=0 if totals is None else totals.verified,
                batches_failed=0 if totals is None else totals.batches - totals.verified,
                findings=findings[origin],
                head_seq=None if head is None else head.seq,
                head_window_end_ms=None if head is None else head.last_window_end_ms,
            )
        )
    return operators, other


@dataclass(slots=True)
class _Seen:
    """The newest verified window end per node and per (node, region), forgotten when too old."""

    nodes: dict[NodeKey, int] = field(default_factory=dict)
    regions: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def note(self, tallies: dict[GroupKey, Tally]) -> None:
        for (role, node_id, region, _), tally in tallies.items():
            end = tally.last_window_end_ms
            if end is None:
                continue
            self.nodes[role, node_id] = max(self.nodes.get((role, node_id), end), end)
            key = (role, node_id, region)
            self.regions[key] = max(self.regions.get(key, end), end)

    def forget_before(self, ms: int) -> None:
        self.nodes = {k: end for k, end in self.nodes.items() if end >= ms}
        self.regions = {k: end for k, end in self.regions.items() if k[:2] in self.nodes}


class NodeWatch:
    def __init__(self, service: LeadService, config: LeadMetricsConfig) -> None:
        self.service = service
        self.config = config
        self._seen = _Seen()

    async def _verified(self, time_range: TimeRange) -> dict[GroupKey, Tally]:
        selection = self.service.verification.current.verified
        return await self.service.source.tallies(CellQuery(time_range), selection, "none")

    async def seed(self) -> None:
        """Who had verified traffic in the `remember_seconds` before the range.

        Run once after a start, in the background (it reads that whole span: tens of seconds
        on a large store); until it is done, a node silent since before the start is not listed.
        """
        now_ms = self.service.clock()
        end_ms = now_ms - self.config.range_seconds * 1000
        start_ms = now_ms - self.config.remember_seconds * 1000
        if start_ms < end_ms:
            self._seen.note(await self._verified(TimeRange(start_ms, end_ms)))

    async def snapshot(self) -> Snapshot:
        now_ms = self.service.clock()
        v = self.service.verification.current
        time_range = TimeRange(now_ms - self.config.range_seconds * 1000, now_ms)
        remember_from = now_ms - self.config.remember_seconds * 1000
        tallies = await self._verified(time_range)
        seen = self._seen
        seen.note(tallies)
        seen.forget_before(remember_from)

        per_node: dict[NodeKey, dict[str, Tally]] = {key: {} for key in seen.nodes}
        for (role, node_id, region, _), tally in tallies.items():
            per_node.setdefault((role, node_id), {})[region] = tally
        for role, node_id, region in seen.regions:
            per_node[role, node_id].setdefault(region, Tally())
        busiest = sorted(per_node.items(), key=lambda item: (-_requests(item[1].values()), item[0]))
        listed = busiest[: self.config.max_nodes]
        thresholds = self.service.thresholds
        nodes = [
            NodeHealth(
                role=role,
                id=node_id,
                figures=figures(Tally.total(regions.values()), thresholds, {}),
                regions={
                    region: figures(tally, thresholds, {})
                    for region, tally in sorted(regions.items())
                },
                last_window_end_ms=seen.nodes.get((role, node_id)),
                region_last_window_end_ms={
                    region: seen.regions[role, node_id, region]
                    for region in regions
                    if (role, node_id, region) in seen.regions
                },
            )
            for (role, node_id), regions in sorted(listed)
        ]
        operators, other = operator_health(v)
        return Snapshot(
            at_ms=now_ms,
            time_range=time_range,
            nodes=nodes,
            omitted=len(busiest) - len(listed),
            operators=operators,
            other_findings=other,
            verification=v,
        )


def _requests(tallies: Iterable[Tally]) -> int:
    return sum(tally.requests for tally in tallies)

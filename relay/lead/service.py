"""The answers of the lead API, as JSON-ready values (relay/lead/api.py only adds HTTP).

Only batches that verified against the registry count. With `include_unverified` the others are
added, and every figure says how much of it came from them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from relay.config import LeadThresholds
from relay.core.document import Document
from relay.core.problem import Problem
from relay.lead.health import OriginPrivacy, figures
from relay.lead.source import Buckets, CellQuery, GroupKey, Source
from relay.lead.tally import BatchSelection, Tally
from relay.lead.timerange import MAX_POINTS, TimeRange
from relay.lead.verification import Verification, VerificationCache
from relay.sinks.documents import attested_leaf_hash
from relay.verify import Finding

__all__ = ["LeadService"]

#: Findings listed per operator; `findings_total` has the full count.
MAX_FINDINGS = 50
_EVERYTHING = BatchSelection((), include=False)
#: The network-wide storage cell (DESIGN §3.2: Atlas's `missing-operators-for-bag`, no node of
#: its own): /v1/nodes lists it apart, as `network`, with the figures that mean something for it.
NETWORK_CELL = ("storage", "_all")
_NETWORK_FIGURES = (
    "signals",
    "operators",
    "summaries",
    "last_window_end_ms",
    "reporters_at_least",
    "noise",
    "unverified",
)
_UNVERIFIED_HINT = "it did not verify against the registry; add include_unverified=true to see it"


def _document(doc: Document) -> dict[str, Any]:
    return {"_index": doc.index, "_id": doc.id, "_source": doc.source}


def _not_found(what: str) -> Problem:
    return Problem(404, "not-found", f"No such {what}")


def _unverified(what: str) -> Problem:
    return Problem(404, "unverified", f"This {what} is hidden", _UNVERIFIED_HINT)


def _findings(findings: Iterable[Finding]) -> list[dict[str, Any]]:
    return [finding.to_dict() for finding in findings]


#: The verified tally of a group and its unverified one (None when those are not asked for).
Pair = tuple[Tally, Tally | None]
K = TypeVar("K")


def _group(
    verified: dict[GroupKey, Tally],
    unverified: dict[GroupKey, Tally] | None,
    group_of: Callable[[GroupKey], K],
) -> dict[K, Pair]:
    """Tallies added up per group (node, region, time bucket), in key order."""
    grouped: dict[K, Pair] = {}
    for key in sorted(verified.keys() | (unverified or {}).keys()):
        ver, unver = grouped.setdefault(
            group_of(key), (Tally(), None if unverified is None else Tally())
        )
        ver.add(verified.get(key, Tally()))
        if unver is not None and unverified is not None:
            unver.add(unverified.get(key, Tally()))
    return grouped


def _node(key: GroupKey) -> tuple[str, str]:
    return key[0], key[1]


def _region(key: GroupKey) -> tuple[str, str, str]:
    return key[0], key[1], key[2]


def _bucket(key: GroupKey) -> int:
    return key[3]


class LeadService:
    def __init__(
        self,
        source: Source,
        verification: VerificationCache,
        thresholds: LeadThresholds,
        clock: Callable[[], int],
    ) -> None:
        self.source = source
        self.verification = verification
        self.thresholds = thresholds
        self.clock = clock

    # -- aggregated health ----------------------------------------------------------------------

    async def _tallies(
        self, query: CellQuery, include_unverified: bool, buckets: Buckets
    ) -> tuple[dict[GroupKey, Tally], dict[GroupKey, Tally] | None, dict[str, OriginPrivacy]]:
        """Verified tallies, unverified ones (None unless asked for) and each origin's privacy."""
        v = self.verification.current
        verified = await self.source.tallies(query, v.verified, buckets)
        if not include_unverified:
            return verified, None, await self.source.privacy(query.time_range, v.verified)
        unverified = await self.source.tallies(query, v.unverified, buckets)
        return verified, unverified, await self.source.privacy(query.time_range, _EVERYTHING)

    def _figures(self, pair: Pair, privacy: dict[str, OriginPrivacy]) -> dict[str, Any]:
        verified, unverified = pair
        tally = Tally.total([verified] if unverified is None else [verified, unverified])
        result = figures(tally, self.thresholds, privacy)
        result["unverified"] = (
            None
            if unverified is None or not unverified.summaries
            else {"summaries": unverified.summaries, "requests": unverified.requests}
        )
        return result

    def _verification_summary(self, v: Verification) -> dict[str, Any]:
        report = v.report
        return {
            "checked_at_ms": v.checked_at_ms,
            "batches_checked": report.batches_checked,
            "batches_verified": len(report.verified),
            "summaries_checked": report.summaries_checked,
            "findings": len(report.findings),
        }

    async def nodes(
        self,
        time_range: TimeRange,
        *,
        role: str | None,
        region: str | None,
        include_unverified: bool,
    ) -> dict[str, Any]:
        query = CellQuery(time_range, role=role, region=region)
        verified, unverified, privacy = await self._tallies(query, include_unverified, "none")
        regions: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for (node_role, node_id, name), pair in _group(verified, unverified, _region).items():
            row = {"region": name, **self._figures(pair, privacy)}
            regions.setdefault((node_role, node_id), []).append(row)
        nodes = []
        network = None
        for node, pair in _group(verified, unverified, _node).items():
            found = self._figures(pair, privacy)
            if node == NETWORK_CELL:
                network = {name: found[name] for name in _NETWORK_FIGURES}
            else:
                nodes.append({"role": node[0], "id": node[1], **found, "regions": regions[node]})
        return {
            "from_ms": time_range.from_ms,
            "to_ms": time_range.to_ms,
            "include_unverified": include_unverified,
            "thresholds": self.thresholds.model_dump(),
            "verification": self._verification_summary(self.verification.current),
            "nodes": nodes,
            "network": network,
        }

    async def series(
        self,
        role: str,
        node_id: str,
        time_range: TimeRange,
        *,
        step_ms: int | None,
        region: str | None,
        include_unverified: bool,
    ) -> dict[str, Any]:
        query = CellQuery(time_range, role=role, node_id=node_id, region=region)
        buckets: Buckets = "window" if step_ms is None else step_ms
        verified, unverified, privacy = await self._tallies(query, include_unverified, buckets)
        points = []
        in_time = sorted(_group(verified, unverified, _bucket).items(), key=lambda item: item[0])
        for start, pair in in_time[:MAX_POINTS]:
            point = self._figures(pair, privacy)
            end = point["last_window_end_ms"] if step_ms is None else start + step_ms
            points.append({"start_ms": start, "end_ms": end, **point})
        return {
            "node": {"role": role, "id": node_id},
            "region": region,
            "from_ms": time_range.from_ms,
            "to_ms": time_range.to_ms,
            "step_ms": step_ms,
            "include_unverified": include_unverified,
            "points": points,
        }

    # -- operators and attestation --------------------------------------------------------------

    async def operators(self) -> dict[str, Any]:
        v = self.verification.current
        report = v.report
        activity = await self.source.origins()
        registered = {entry.origin: entry for entry in v.registry.operators}
        by_origin: dict[str, list[Finding]] = {}
        other: list[Finding] = []
        for finding in report.findings:
            if finding.origin is None:
                other.append(finding)
            else:
                by_origin.setdefault(finding.origin, []).append(finding)
        operators = []
        for origin in sorted(registered.keys() | activity.keys() | report.origins.keys()):
            seen = activity.get(origin)
            totals = report.origins.get(origin)
            head = report.heads.get(origin)
            findings = by_origin.get(origin, [])
            if origin not in registered:
                state = "unregistered"
            elif seen is None:
                state = "no_data"
            elif findings:
                state = "findings"
            else:
                state = "verified"
            entry = registered.get(origin)
            operators.append(
                {
                    "origin": origin,
                    "state": state,
                    "registered": entry is not None,
                    "keys": []
                    if entry is None
                    else [
                        {
                            "kid": key.vkey.split("+")[1] if key.vkey.count("+") >= 2 else None,
                            "valid_from_seq": key.valid_from_seq,
                            "valid_until_seq": key.valid_until_seq,
                        }
                        for key in entry.keys
                    ],
                    "head": None if head is None else head.to_dict(),
                    "last_seen_ms": None if seen is None else seen.last_signed_at_ms,
                    "last_window_end_ms": None if seen is None else seen.last_window_end_ms,
                    "batches": 0 if seen is None else seen.batches,
                    "batches_verified": 0 if totals is None else totals.verified,
                    "summaries_checked": 0 if totals is None else totals.summaries,
                    "findings_total": len(findings),
                    "findings": _findings(findings[:MAX_FINDINGS]),
                }
            )
        return {
            "verification": self._verification_summary(v),
            "operators": operators,
            "other_findings": _findings(other[:MAX_FINDINGS]),
        }

    def _selection(self, include_unverified: bool) -> BatchSelection:
        return _EVERYTHING if include_unverified else self.verification.current.verified

    async def batches(
        self,
        *,
        origin: str | None,
        time_range: TimeRange,
        include_unverified: bool,
        limit: int,
        offset: int,
    ) -> dict[str, Any]:
        v = self.verification.current
        selection = self._selection(include_unverified)
        page = await self.source.batches(origin, time_range, selection, limit, offset)
        batches = []
        for source in page.sources:
            origin_of, seq = source.get("origin"), source.get("seq")
            key = (origin_of, seq) if isinstance(origin_of, str) and isinstance(seq, int) else None
            found = [] if key is None else v.findings_by_batch.get(key, [])
            batches.append(
                {
                    **{k: val for k, val in source.items() if k not in ("signed", "sig")},
                    "verified": key is not None and key in v.report.verified,
                    "finding_codes": sorted({f.code for f in found}),
                }
            )
        return {
            "from_ms": time_range.from_ms,
            "to_ms": time_range.to_ms,
            "include_unverified": include_unverified,
            "total": page.total,
            "limit": limit,
            "offset": offset,
            "batches": batches,
        }

    async def batch(self, origin: str, seq: int, *, include_unverified: bool) -> dict[str, Any]:
        v = self.verification.current
        doc = await self.source.batch(origin, seq)
        if doc is None:
            raise _not_found("batch")
        verified = v.is_verified(origin, seq)
        if not verified and not include_unverified:
            raise _unverified("batch")
        return {
            "verified": verified,
            "findings": _findings(v.findings_by_batch.get((origin, seq), [])),
            "document": _document(doc),
        }

    async def summary(
        self, origin: str, seq: int, i: int, *, include_unverified: bool
    ) -> dict[str, Any]:
        v = self.verification.current
        doc = await self.source.summary(origin, seq, i)
        if doc is None:
            raise _not_found("summary")
        verified = v.is_verified(origin, seq)
        if not verified and not include_unverified:
            raise _unverified("summary")
        batch = await self.source.batch(origin, seq)
        att = doc.source.get("att")
        att = att if isinstance(att, dict) else {}
        return {
            "verified": verified,
            "findings": _findings(v.findings_by_batch.get((origin, seq), [])),
            "document": _document(doc),
            "inclusion": {
                "leaf_index": i,
                "tree_size": att.get("n"),
                "leaf_hash": attested_leaf_hash(att),
                "proof": att.get("proof"),
                "root": None if batch is None else batch.source.get("root"),
                "batch_hash": None if batch is None else batch.source.get("batch_hash"),
            },
        }

    async def checkpoints(
        self, origin: str, *, include_unverified: bool, limit: int
    ) -> dict[str, Any]:
        v = self.verification.current
        registered = any(entry.origin == origin for entry in v.registry.operators)
        notes = await self.source.checkpoints(origin, self._selection(include_unverified), limit)
        if not notes and not registered and origin not in (await self.source.origins()):
            raise _not_found("operator")
        head = v.report.heads.get(origin)
        return {
            "origin": origin,
            "latest": None
            if head is None
            else {"seq": head.seq, "batch_hash": head.batch_hash, "note": head.checkpoint},
            "checkpoints": [
                {
                    **_note_body(note),
                    "seq": seq,
                    "note": note,
                    "verified": v.is_verified(origin, seq),
                }
                for seq, note in notes
            ],
        }


def _note_body(note: str) -> dict[str, Any]:
    """Tree size and root as the note's text states them (trusted only if `verified`)."""
    lines = note.split("\n")
    size = int(lines[1]) if len(lines) > 2 and lines[1].isdigit() else None
    return {"tree_size": size, "root": lines[2] if size is not None else None}

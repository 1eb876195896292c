"""The polling witness: fetch, verify, judge, cosign, remember (issue 17).

Each round reloads the registry (an operator added or a key rotated there is picked up without a
restart) and, for every operator entry with a `url`:

1. GET <url>/v1/operator and open its checkpoint with the registry's keys of that origin;
2. if the tree is larger than the largest one cosigned, GET <url>/v1/proof/consistency from that
   size and check the proof (RFC 9162 §2.1.4);
3. judge it against what is stored (relay/verify/judge.py): cosign and store it, or raise
   `inconsistent_checkpoint`.

An operator that cannot be reached, serves a checkpoint its registered key did not sign, or
cannot produce a proof is logged and not cosigned, but is no finding: nothing shows a fork yet.
Auditors who require this witness's cosignature (`relay verify --witness-key`) then see
`missing_cosignature` for whatever it did not vouch for.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from relay.attest.checkpoint import Checkpoint
from relay.attest.cosignature import cosign
from relay.attest.keys import OperatorKey
from relay.registry import OperatorEntry, Registry, RegistryError
from relay.verify.checkpoints import open_saved_checkpoint
from relay.verify.consistency import MAX_ANSWER_BYTES, parse_proof
from relay.verify.errors import SavedCheckpointError
from relay.verify.findings import Code, Finding
from relay.verify.judge import Cosign, Inconsistent, judge, needs_proof
from relay.verify.keyring import Keyring
from relay.witness.store import WitnessStore

__all__ = ["Witness"]

log = logging.getLogger("relay.witness")


class _Unavailable(Exception):
    """The operator could not be asked, or its answer cannot be used (no finding)."""


class Witness:
    def __init__(
        self,
        key: OperatorKey,
        store: WitnessStore,
        registry_path: Path,
        *,
        timeout_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self._store = store
        self._registry_path = registry_path
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._clock = clock

    def session(self) -> aiohttp.ClientSession:
        """An HTTP session with the configured per-request timeout, for ``poll_once``."""
        return aiohttp.ClientSession(timeout=self._timeout)

    async def run(self, interval_seconds: float) -> None:
        """Poll every ``interval_seconds`` until cancelled.

        A registry that cannot be read (being edited, say) skips the round: the witness keeps
        what it stored and tries again at the next one.
        """
        async with self.session() as session:
            while True:
                try:
                    await self.poll_once(session)
                except RegistryError as exc:
                    log.error("witness: round skipped: %s", exc)
                await asyncio.sleep(interval_seconds)

    async def poll_once(self, session: aiohttp.ClientSession) -> list[Finding]:
        """One round over the registry's operators with a url; the new findings it raised.

        Raises RegistryError if the registry cannot be read.
        """
        registry = Registry.load(self._registry_path)
        keyring = Keyring(registry)
        findings = []
        for entry in registry.operators:
            if entry.url is None:
                continue
            try:
                finding = await self._observe(session, entry, keyring)
            except _Unavailable as exc:
                log.warning("witness: %s not checked: %s", entry.origin, exc)
                continue
            if finding is not None:
                findings.append(finding)
        return findings

    async def _observe(
        self, session: aiohttp.ClientSession, entry: OperatorEntry, keyring: Keyring
    ) -> Finding | None:
        assert entry.url is not None
        base = entry.url.rstrip("/")
        view = await _get_json(session, f"{base}/v1/operator")
        if not isinstance(view, dict):
            raise _Unavailable("/v1/operator did not answer an object")
        note = view.get("checkpoint")
        if note is None:
            return None  # no batch sealed yet
        if not isinstance(note, str):
            raise _Unavailable("/v1/operator has no checkpoint note")
        try:
            checkpoint = open_saved_checkpoint(note, keyring).checkpoint
        except SavedCheckpointError as exc:
            raise _Unavailable(str(exc)) from None
        if checkpoint.origin != entry.origin:
            raise _Unavailable(f"its checkpoint is of origin {checkpoint.origin!r}")
        origin = entry.origin
        last = self._store.latest(origin)
        proof = None
        if needs_proof(checkpoint, last):
            assert last is not None
            proof = await _get_proof(session, base, last.size, checkpoint.size)
        verdict = judge(checkpoint, last, self._store.root_at(origin, checkpoint.size), proof)
        now = int(self._clock())
        if isinstance(verdict, Inconsistent):
            return self._raise(checkpoint, verdict.message, now)
        if isinstance(verdict, Cosign):
            cosigned = cosign(self.key, note, now)
            self._store.add_cosigned(origin, checkpoint.size, checkpoint.root, cosigned, now)
            log.info("witness: cosigned %s at size %d", origin, checkpoint.size)
        return None

    def _raise(self, checkpoint: Checkpoint, message: str, now: int) -> Finding:
        code = Code.INCONSISTENT_CHECKPOINT
        origin, size = checkpoint.origin, checkpoint.size
        if self._store.add_finding(origin, code.value, size, checkpoint.root, message, now):
            log.warning("witness: %s: %s at size %d: %s", code.value, origin, size, message)
        return Finding(code.value, origin, size - 1 if size else None, None, message)


async def _get_json(session: aiohttp.ClientSession, url: str) -> Any:
    try:
        async with session.get(url, allow_redirects=False) as response:
            if response.status != 200:
                raise _Unavailable(f"GET {url} answered {response.status}")
            body = await response.content.read(MAX_ANSWER_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise _Unavailable(f"GET {url} failed: {exc!r}") from None
    if len(body) > MAX_ANSWER_BYTES:
        raise _Unavailable(f"GET {url} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        return orjson.loads(body)
    except ValueError:
        raise _Unavailable(f"GET {url} did not answer JSON") from None


async def _get_proof(session: aiohttp.ClientSession, base: str, old: int, new: int) -> list[bytes]:
    answer = await _get_json(session, f"{base}/v1/proof/consistency?old={old}&new={new}")
    try:
        return parse_proof(answer, old, new)
    except ValueError as exc:
        raise _Unavailable(str(exc)) from None

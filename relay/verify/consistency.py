"""Saved checkpoints against the operator's current log, by consistency proof (issue 17).

`relay verify --operator-proofs` asks each saved checkpoint's operator (its registry `url`) for
its current checkpoint and for the RFC 9162 §2.1.4 proof from the saved size, and checks it: an
operator whose log today does not extend what the auditor saved is `inconsistent_checkpoint`,
whatever its documents say. Rebuilding the log from the documents (relay/verify/verifier.py)
shows the same for the documents read; this shows it for what the operator serves, without them.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from relay.attest.merkle import HASH_SIZE
from relay.core.b64 import b64decode
from relay.registry import Registry
from relay.verify.checkpoints import SavedCheckpoint, open_saved_checkpoint
from relay.verify.errors import VerifyError
from relay.verify.findings import Code, Finding
from relay.verify.judge import Inconsistent, Seen, judge, needs_proof
from relay.verify.keyring import Keyring

__all__ = ["fetch_json", "operator_proof_findings", "parse_proof"]

# /v1/operator is a few hundred bytes and a proof ~45 bytes × log2(size); anything far larger is
# not an answer to read into memory.
MAX_ANSWER_BYTES = 1 << 20

Fetch = Callable[[str], Any]


def parse_proof(answer: Any, old: int, new: int) -> list[bytes]:
    """The hashes of a `GET /v1/proof/consistency` answer; ValueError unless it is one for
    (``old``, ``new``) with 32-byte base64 hashes."""
    if (
        not isinstance(answer, dict)
        or answer.get("old") != old
        or answer.get("new") != new
        or not isinstance(answer.get("proof"), list)
    ):
        raise ValueError(f"the consistency proof {old}..{new} is not in the documented form")
    proof = []
    for item in answer["proof"]:
        digest = b64decode(item) if isinstance(item, str) else b""
        if len(digest) != HASH_SIZE:
            raise ValueError(f"the consistency proof {old}..{new} has a malformed hash")
        proof.append(digest)
    return proof


def fetch_json(url: str, timeout_seconds: float = 10.0) -> Any:
    """GET ``url`` and parse its JSON answer; VerifyError if that cannot be done."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            body = response.read(MAX_ANSWER_BYTES + 1)
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise VerifyError(f"GET {url}: {exc}") from exc
    if len(body) > MAX_ANSWER_BYTES:
        raise VerifyError(f"GET {url} answered more than {MAX_ANSWER_BYTES} bytes")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise VerifyError(f"GET {url} did not answer JSON") from exc


def operator_proof_findings(
    saved: Sequence[str], registry: Registry, fetch: Fetch = fetch_json
) -> list[Finding]:
    """`inconsistent_checkpoint` for each saved note its operator's current log does not extend.

    Raises VerifyError when an operator cannot be asked (no `url` in the registry, no answer,
    an answer that is not a signed checkpoint or a proof): then the check could not run.
    """
    keyring = Keyring(registry)
    urls = {entry.origin: entry.url for entry in registry.operators}
    findings = []
    for text in saved:
        finding = _check(open_saved_checkpoint(text, keyring), urls, keyring, fetch)
        if finding is not None:
            findings.append(finding)
    return findings


def _check(
    saved: SavedCheckpoint, urls: dict[str, str | None], keyring: Keyring, fetch: Fetch
) -> Finding | None:
    checkpoint = saved.checkpoint
    origin = checkpoint.origin
    url = urls.get(origin)
    if url is None:
        raise VerifyError(f"--operator-proofs: origin {origin} has no url in the registry")
    base = url.rstrip("/")
    view = fetch(f"{base}/v1/operator")
    note = view.get("checkpoint") if isinstance(view, dict) else None
    if not isinstance(note, str):
        raise VerifyError(f"{base}/v1/operator has no checkpoint")
    current = open_saved_checkpoint(note, keyring).checkpoint
    last = Seen(checkpoint.size, checkpoint.root)
    proof = None
    if needs_proof(current, last):
        answer = fetch(f"{base}/v1/proof/consistency?old={last.size}&new={current.size}")
        try:
            proof = parse_proof(answer, last.size, current.size)
        except ValueError as exc:
            raise VerifyError(f"{base}: {exc}") from exc
    seen_root = checkpoint.root if current.size == checkpoint.size else None
    verdict = judge(current, last, seen_root, proof)
    if not isinstance(verdict, Inconsistent):
        return None
    return Finding(
        Code.INCONSISTENT_CHECKPOINT.value,
        origin,
        checkpoint.size - 1 if checkpoint.size else None,
        None,
        f"the operator's current checkpoint against the saved one of size {checkpoint.size}: "
        + verdict.message,
    )

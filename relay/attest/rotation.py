"""Operator key rotation with a signed handover (DESIGN §5.4).

The operator places a new key next to the current one:

    relay keygen --origin <origin> --out <data_dir>/operator.next.key

At its next seal the relay

1. signs one last batch (seq s) with the current key, with header field ``next_kid`` = the new
   key's kid; its checkpoint is signed by the current key too, the key valid for seq s;
2. writes a small intent file naming that batch, then commits the batch to the outbox;
3. keeps the current key as ``operator.key.retired-<kid>`` (a hard link: same file, mode 0600),
   moves ``operator.next.key`` to ``operator.key``, and, if the registry file is the relay's own,
   records the handover there: the old key ``valid_until_seq: s``, the new key
   ``valid_from_seq: s + 1``;
4. signs seq s + 1 and everything after with the new key.

A crash between 2 and 3 is finished at the next seal: the intent names the batch, and the outbox
head says whether that batch was committed (then the rotation completes) or not (then the intent
is dropped and the handover is signed again). The lead applies the same two registry changes to
its own registry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from relay.attest.errors import AttestError
from relay.attest.keys import OperatorKey, _fsync_directory
from relay.core.b64 import b64encode
from relay.registry import OperatorEntry, Registry, RegistryKey

__all__ = ["KEY_FILE", "NEXT_KEY_FILE", "KeyRotation", "RotationError", "record_rotation"]

log = logging.getLogger(__name__)

KEY_FILE = "operator.key"
NEXT_KEY_FILE = "operator.next.key"
_INTENT_FILE = "operator.rotation.json"


class RotationError(AttestError):
    """The files of an interrupted rotation contradict each other; an operator must look."""


@dataclass(frozen=True, slots=True)
class _Intent:
    seq: int
    batch_hash: str  # base64 of the handover batch's hash
    old_vkey: str
    new_kid: str


class KeyRotation:
    """Key rotation for the relay whose key lives in ``data_dir``.

    ``registry_path`` is the relay's own registry, updated on rotation; None when the registry
    belongs to someone else (the lead), who records the handover there.
    """

    def __init__(self, data_dir: Path, registry_path: Path | None) -> None:
        self._dir = data_dir
        self._registry_path = registry_path

    def settle(self, current: OperatorKey, head_batch_hash: bytes | None) -> OperatorKey:
        """The key to sign with next, given the batch at the head of the outbox.

        If a handover is pending and that batch is its handover batch, the rotation is finished
        (right after the commit, or at the next seal after a crash) and the new key returned. If
        the handover batch never reached the outbox, the intent is dropped: the next seal signs
        the handover again.
        """
        intent = self._read_intent()
        if intent is None:
            return current
        if head_batch_hash is not None and b64encode(head_batch_hash) == intent.batch_hash:
            return self._finish(intent)
        (self._dir / _INTENT_FILE).unlink()
        return current

    def next_key(self, current: OperatorKey) -> OperatorKey | None:
        """The key to hand over to in the next batch, if a usable one is waiting."""
        path = self._dir / NEXT_KEY_FILE
        if not path.exists():
            return None
        try:
            key = OperatorKey.load(path)
        except (AttestError, OSError) as exc:
            log.error("not rotating keys: %s", exc)
            return None
        if key.origin != current.origin or key.kid == current.kid:
            log.error(
                "not rotating keys: %s is %s+%s; it must be a new key of origin %s",
                path,
                key.origin,
                key.kid,
                current.origin,
            )
            return None
        return key

    def begin(self, current: OperatorKey, new: OperatorKey, seq: int, batch_hash: bytes) -> None:
        """Record which batch hands over to ``new``: durably, before the outbox commit."""
        intent = {
            "seq": seq,
            "batch_hash": b64encode(batch_hash),
            "old_vkey": current.verifier.encode(),
            "new_kid": new.kid,
        }
        path = self._dir / _INTENT_FILE
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(intent))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(self._dir)

    def _finish(self, intent: _Intent) -> OperatorKey:
        # Every step can run again after a crash: each checks whether it is done already.
        key_path, next_path = self._dir / KEY_FILE, self._dir / NEXT_KEY_FILE
        if next_path.exists():
            old_kid = intent.old_vkey.split("+", 2)[1]
            retired = self._dir / f"{KEY_FILE}.retired-{old_kid}"
            if not retired.exists():
                os.link(key_path, retired)
            os.replace(next_path, key_path)
            _fsync_directory(self._dir)
        new = OperatorKey.load(key_path)
        if new.kid != intent.new_kid:
            raise RotationError(
                f"{key_path} holds key {new.kid}, but the handover in seq {intent.seq} names "
                f"{intent.new_kid}"
            )
        if self._registry_path is not None:
            record_rotation(self._registry_path, intent.old_vkey, new.verifier.encode(), intent.seq)
        (self._dir / _INTENT_FILE).unlink()
        _fsync_directory(self._dir)
        log.info("rotated operator key %s -> %s after seq %d", intent.old_vkey, new.kid, intent.seq)
        return new

    def _read_intent(self) -> _Intent | None:
        path = self._dir / _INTENT_FILE
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise RotationError(f"{path} is not a rotation intent: {exc}") from exc
        return _Intent(data["seq"], data["batch_hash"], data["old_vkey"], data["new_kid"])


def record_rotation(registry_path: Path, old_vkey: str, new_vkey: str, last_seq: int) -> None:
    """Write a handover into a registry: ``old_vkey`` valid until ``last_seq``, ``new_vkey``
    from ``last_seq + 1`` (DESIGN §5.4). Running it twice changes nothing."""
    origin = old_vkey.split("+", 1)[0]
    registry = Registry.load(registry_path) if registry_path.exists() else Registry()
    entry = next((e for e in registry.operators if e.origin == origin), None)
    if entry is None:
        entry = OperatorEntry(origin=origin, keys=[RegistryKey(vkey=old_vkey)])
        registry.operators.append(entry)
    for key in entry.keys:
        if key.vkey == old_vkey and (key.valid_until_seq is None or key.valid_until_seq > last_seq):
            key.valid_until_seq = last_seq
    if not any(key.vkey == new_vkey for key in entry.keys):
        entry.keys.append(RegistryKey(vkey=new_vkey, valid_from_seq=last_seq + 1))
    registry.save(registry_path)

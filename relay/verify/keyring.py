"""The registry as the auditor uses it: which verifier key may sign which seqs of an origin.

DESIGN §2 (registry format) and §5.4 (keys, rotation by `valid_from_seq` / `valid_until_seq`).
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.attest.errors import InvalidVerifierKeyError
from relay.attest.keys import VerifierKey
from relay.registry import Registry, RegistryError

__all__ = ["Keyring"]


@dataclass(frozen=True, slots=True)
class _Grant:
    vkey: VerifierKey
    valid_from_seq: int
    valid_until_seq: int | None  # inclusive; None = open-ended

    def covers(self, seq: int) -> bool:
        return self.valid_from_seq <= seq and (
            self.valid_until_seq is None or seq <= self.valid_until_seq
        )


class Keyring:
    """Verifier keys by (origin, kid), each with the seq ranges the registry grants it."""

    def __init__(self, registry: Registry) -> None:
        """Parse every key of ``registry``; RegistryError names the first one that is unusable."""
        self._grants: dict[tuple[str, str], list[_Grant]] = {}
        self._by_origin: dict[str, list[VerifierKey]] = {}
        for entry in registry.operators:
            for key in entry.keys:
                try:
                    vkey = VerifierKey.parse(key.vkey)
                except InvalidVerifierKeyError as exc:
                    raise RegistryError(
                        f"operator {entry.origin}: key {key.vkey!r}: {exc}"
                    ) from exc
                if vkey.origin != entry.origin:
                    raise RegistryError(
                        f"operator {entry.origin}: key {key.vkey!r} belongs to origin {vkey.origin}"
                    )
                if key.valid_until_seq is not None and key.valid_until_seq < key.valid_from_seq:
                    raise RegistryError(
                        f"operator {entry.origin}: key {vkey.kid} has valid_until_seq "
                        f"{key.valid_until_seq} < valid_from_seq {key.valid_from_seq}"
                    )
                grants = self._grants.setdefault((vkey.origin, vkey.kid), [])
                grants.append(_Grant(vkey, key.valid_from_seq, key.valid_until_seq))
                keys = self._by_origin.setdefault(vkey.origin, [])
                if vkey not in keys:
                    keys.append(vkey)

    def key(self, origin: str, kid: str) -> VerifierKey | None:
        """The registered key ``origin``+``kid``, whatever its validity; None if not registered."""
        grants = self._grants.get((origin, kid))
        return grants[0].vkey if grants else None

    def valid_for(self, vkey: VerifierKey, seq: int) -> bool:
        """True iff the registry lets ``vkey`` sign batch ``seq`` of its origin."""
        return any(g.covers(seq) for g in self._grants.get((vkey.origin, vkey.kid), ()))

    def keys(self, origin: str) -> list[VerifierKey]:
        """Every key registered for ``origin``, in registry order."""
        return list(self._by_origin.get(origin, ()))

    def validity(self, vkey: VerifierKey) -> str:
        """The seq ranges of ``vkey``, for messages: e.g. ``0..41, 50..``."""
        ranges = [
            f"{g.valid_from_seq}..{'' if g.valid_until_seq is None else g.valid_until_seq}"
            for g in self._grants.get((vkey.origin, vkey.kid), ())
        ]
        return ", ".join(ranges) or "none"

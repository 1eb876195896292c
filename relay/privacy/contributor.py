"""Contributor keys (P2): HMAC-SHA256 of the client material under a per-window random salt.

The salt lives in memory only while its window is open and is dropped when the window is sealed;
crash recovery may persist it next to the WAL, and that copy must go with the WAL (P8). After
that nobody, the operator included, can link a key to a client, or keys of different windows to
each other. A plain or unkeyed hash would be reversible by hashing guesses, so there is none here.

The same keyed hash, over the client's source network (IPv4 /24, IPv6 /48) instead of its id,
gives the network key (P8): it counts distinct networks (P5) and bounds one network's events
(P4), so that clients a single network invents neither make a cell publishable nor move it.

The key is truncated to CONTRIBUTOR_KEY_BYTES = 8 bytes (64 bits). It only serves distinct
counting (P5) and per-contributor bounding (P4) within one window. With n contributors in a window
the chance that any two share a key is about n²/2⁶⁵: 2.7·10⁻⁸ for a million contributors. A
collision would merge two contributors, under-counting by one and bounding them together; it
never exposes anything.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Final

__all__ = [
    "CONTRIBUTOR_KEY_BYTES",
    "SALT_BYTES",
    "WindowSalts",
    "client_material",
    "contributor_key",
    "network_material",
    "source_network",
    "ua_family",
]

CONTRIBUTOR_KEY_BYTES: Final = 8
SALT_BYTES: Final = 32


class WindowSalts:
    """The random salt of each open window, keyed by window start (ms)."""

    __slots__ = ("_salts",)

    def __init__(self) -> None:
        self._salts: dict[int, bytes] = {}

    def salt_for(self, window_start_ms: int) -> bytes:
        """The window's salt, drawn from the OS CSPRNG on first use."""
        salt = self._salts.get(window_start_ms)
        if salt is None:
            # setdefault keeps whichever salt a racing thread stored first, so one window never
            # ends up with keys under two salts.
            salt = self._salts.setdefault(window_start_ms, secrets.token_bytes(SALT_BYTES))
        return salt

    def restore(self, window_start_ms: int, salt: bytes) -> None:
        """Reinstate a salt persisted before a crash, so replayed events keep their keys."""
        if len(salt) != SALT_BYTES:
            raise ValueError(f"a window salt is {SALT_BYTES} bytes, got {len(salt)}")
        if self._salts.setdefault(window_start_ms, bytes(salt)) != salt:
            raise ValueError(f"window {window_start_ms} already has a different salt")

    def destroy(self, window_start_ms: int) -> None:
        """Forget the window's salt when it is sealed; unknown windows are ignored.

        A later salt_for for the same window would draw a new, unrelated salt, so callers must
        reject events for sealed windows before asking for a salt.

        Best effort: Python cannot wipe memory, so the bytes stay in freed heap until reused. What
        this guarantees is that this object holds no reference any more and cannot compute the
        window's keys again.
        """
        self._salts.pop(window_start_ms, None)

    def windows(self) -> list[int]:
        """Start (ms) of every window that currently has a salt, ascending."""
        return sorted(self._salts)


def contributor_key(salt: bytes, material: bytes) -> bytes:
    """HMAC-SHA256(salt, material) truncated to CONTRIBUTOR_KEY_BYTES."""
    return hmac.digest(salt, material, "sha256")[:CONTRIBUTOR_KEY_BYTES]


# Materials start with a distinct tag, so a client string can never produce the same bytes as an
# address + browser family. surrogatepass keeps the encoding total and injective for any str that
# JSON can carry, lone surrogates included.


def client_material(client: str) -> bytes:
    """Material for an app-supplied pseudonymous client id (native `client`, Atlas account)."""
    return b"c\x00" + client.encode("utf-8", "surrogatepass")


def network_material(ip: str, user_agent: str | None) -> bytes:
    """Material for a client without an id: its address and coarse browser family."""
    family = ua_family(user_agent).encode("ascii")
    return b"n\x00" + ip.encode("utf-8", "surrogatepass") + b"\x00" + family


def source_network(ip: str) -> bytes:
    """Material for the client's source network (P4, P5): its IPv4 /24 or IPv6 /48.

    One network then counts once towards k however many clients it invents, and bounds their
    events together. An IPv4-mapped IPv6 address is its IPv4 address. A peer that is not an
    address at all (a trusted proxy forwarded something else) is its own network.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return b"s\x00?" + ip.encode("utf-8", "surrogatepass")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if isinstance(address, ipaddress.IPv4Address):
        return b"s\x004" + address.packed[:3]
    return b"s\x006" + address.packed[:6]


_MOBILE = {
    family: f"{family}-mobile"
    for family in ("edge", "opera", "firefox", "chrome", "safari", "other")
}


def ua_family(user_agent: str | None) -> str:
    """Coarse browser family, with "-mobile" for phones; never a version, OS or device.

    One of edge, opera, firefox, chrome, safari, other (each optionally -mobile), or bot.
    """
    if not user_agent:
        return "other"
    lowered = user_agent.lower()
    if "bot" in lowered or "spider" in lowered or "crawl" in lowered:
        return "bot"
    # Browser tokens have a fixed spelling, so they are matched as written. Order matters: Edge
    # and Opera also say Chrome and Safari, Chrome also says Safari.
    if "Edg" in user_agent:  # Edg/, EdgA/, EdgiOS/, and the legacy Edge/
        family = "edge"
    elif "OPR/" in user_agent or "Opera" in user_agent:
        family = "opera"
    elif "Firefox/" in user_agent or "FxiOS/" in user_agent:
        family = "firefox"
    elif "Chrom" in user_agent or "CriOS/" in user_agent:  # Chrome/, Chromium/
        family = "chrome"
    elif "Safari/" in user_agent:
        family = "safari"
    else:
        family = "other"
    if "Mobi" in user_agent or "Android" in user_agent or "iPhone" in user_agent:
        return _MOBILE[family]
    return family

"""Coarse geo (P3): an IP address becomes a macro-region in memory, and nothing else.

Lookups use the offline `iptocc` table (RIR allocation data embedded in the wheel): no network,
no city, ASN or prefix. Nothing here logs, raises with or keeps an address, and nothing is cached
by address, since a cache would hold addresses in memory (P1, P3).
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv6Address
from typing import Final, Literal

from iptocc import country_code

from relay.privacy.continents import CONTINENT_BY_COUNTRY, COUNTRY_BY_CODE

__all__ = ["REGIONS", "UNKNOWN", "GeoMode", "RegionResolver"]

GeoMode = Literal["region", "country", "none"]

UNKNOWN: Final = "ZZ"
REGIONS: Final = ("AF", "AN", "AS", "EU", "NA", "OC", "SA", UNKNOWN)

_TABLES: Final[Mapping[GeoMode, Mapping[str, str]]] = {
    "region": CONTINENT_BY_COUNTRY,
    "country": COUNTRY_BY_CODE,
    "none": {},
}


class RegionResolver:
    """Resolves a client address to a continent code, an ISO country code, or always ZZ."""

    __slots__ = ("_table",)

    def __init__(self, mode: GeoMode) -> None:
        if mode not in _TABLES:
            raise ValueError(f"unknown geo mode {mode!r}; expected one of {sorted(_TABLES)}")
        # A private plain dict: the hot path pays for neither a mappingproxy nor a mode switch.
        self._table: dict[str, str] = dict(_TABLES[mode])

    def resolve(self, ip: str) -> str:
        """The continent code of `ip`, or its country code in mode "country".

        ZZ for special-purpose, unparsable or unallocated addresses, and always in mode "none".
        """
        table = self._table
        if not table:
            return UNKNOWN
        code = _lookup(ip)
        if code is None:
            # The rare path: iptocc has no entry for IPv4-mapped IPv6 (what a dual-stack socket
            # reports for IPv4 peers), so retry with the embedded IPv4 address. Everything else
            # without an entry (loopback, private, link-local, reserved, multicast, garbage) has
            # no country, and ZZ is the answer.
            mapped = _ipv4_mapped(ip)
            if mapped is None:
                return UNKNOWN
            code = _lookup(mapped)
            if code is None:
                return UNKNOWN
        return table.get(code, UNKNOWN)


def _lookup(ip: str) -> str | None:
    try:
        return country_code(ip)
    except (TypeError, ValueError):  # a non-string, or a string that is not even valid UTF-8
        return None


def _ipv4_mapped(ip: str) -> str | None:
    if ":" not in ip:
        return None
    if ip.startswith(("::ffff:", "::FFFF:")) and "." in ip:
        # How inet_ntop, and so every socket peer address, spells it: skip the slow parser.
        return ip[7:]
    try:
        mapped = IPv6Address(ip).ipv4_mapped
    except ValueError:
        return None
    return None if mapped is None else str(mapped)

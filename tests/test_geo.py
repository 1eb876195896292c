from __future__ import annotations

import pytest

from relay.privacy.continents import CONTINENT_BY_COUNTRY, COUNTRY_BY_CODE
from relay.privacy.geo import REGIONS, UNKNOWN, GeoMode, RegionResolver

# Continents


def test_every_value_is_a_continent() -> None:
    assert set(CONTINENT_BY_COUNTRY.values()) == set(REGIONS) - {UNKNOWN}


def test_covers_every_iso_code() -> None:
    codes = {code for code in CONTINENT_BY_COUNTRY if len(code) == 2 and code.isupper()}
    assert len(codes) == len(CONTINENT_BY_COUNTRY)
    # 249 ISO 3166-1 assignments + XK, UK, EU, AP + withdrawn AN, CS, YU, TP, FX.
    assert len(CONTINENT_BY_COUNTRY) == 249 + 9


@pytest.mark.parametrize(
    ("country", "continent"),
    [
        ("US", "NA"),
        ("CA", "NA"),
        ("MX", "NA"),
        ("PA", "NA"),
        ("GL", "NA"),
        ("BR", "SA"),
        ("AR", "SA"),
        ("GF", "SA"),
        ("GB", "EU"),
        ("DE", "EU"),
        ("RU", "EU"),
        ("CY", "EU"),
        ("XK", "EU"),
        ("TR", "AS"),
        ("GE", "AS"),
        ("KZ", "AS"),
        ("CN", "AS"),
        ("IN", "AS"),
        ("IL", "AS"),
        ("EG", "AF"),
        ("ZA", "AF"),
        ("NA", "AF"),  # Namibia, not North America
        ("RE", "AF"),
        ("AU", "OC"),
        ("NZ", "OC"),
        ("TL", "OC"),
        ("AQ", "AN"),
        ("TF", "AN"),
        ("EU", "EU"),
        ("AP", "AS"),
    ],
)
def test_spot_checks(country: str, continent: str) -> None:
    assert CONTINENT_BY_COUNTRY[country] == continent


@pytest.mark.parametrize("code", ["ZZ", "A1", "A2", "O1", "XX", ""])
def test_non_locations_are_absent(code: str) -> None:
    assert code not in CONTINENT_BY_COUNTRY


def test_country_mode_table() -> None:
    assert COUNTRY_BY_CODE["US"] == "US"
    assert COUNTRY_BY_CODE["UK"] == "GB"
    assert "EU" not in COUNTRY_BY_CODE
    assert "AP" not in COUNTRY_BY_CODE


# Resolver


@pytest.fixture(scope="module")
def regions() -> RegionResolver:
    return RegionResolver("region")


@pytest.mark.parametrize(
    ("ip", "region"),
    [
        ("8.8.8.8", "NA"),
        ("81.2.69.160", "EU"),  # GB
        ("1.1.1.1", "OC"),  # AU
        ("41.0.0.1", "AF"),  # ZA
        ("2001:4860:4860::8888", "NA"),
        ("::ffff:8.8.8.8", "NA"),
        ("::FFFF:8.8.8.8", "NA"),
        ("0:0:0:0:0:ffff:808:808", "NA"),
    ],
)
def test_region_mode(regions: RegionResolver, ip: str, region: str) -> None:
    assert regions.resolve(ip) == region


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",
        "224.0.0.1",
        "240.0.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "::1",
        "::",
        "fe80::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "2001:db8::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "garbage",
        "",
        " 8.8.8.8",
        "8.8.8.8.8",
        "999.1.1.1",
        "[::1]",
        "\ud800",  # lone surrogate: iptocc raises
        "8.8.8.8\x00",
    ],
)
def test_unroutable_and_garbage_are_unknown(regions: RegionResolver, ip: str) -> None:
    assert regions.resolve(ip) == UNKNOWN


def test_country_mode() -> None:
    countries = RegionResolver("country")
    assert countries.resolve("8.8.8.8") == "US"
    assert countries.resolve("81.2.69.160") == "GB"
    assert countries.resolve("::ffff:1.1.1.1") == "AU"
    assert countries.resolve("127.0.0.1") == UNKNOWN
    assert countries.resolve("garbage") == UNKNOWN


def test_none_mode() -> None:
    nothing = RegionResolver("none")
    for ip in ("8.8.8.8", "81.2.69.160", "::1", "garbage"):
        assert nothing.resolve(ip) == UNKNOWN


def test_unknown_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="geo mode"):
        RegionResolver("city")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["region", "country", "none"])
def test_results_are_always_known_codes(mode: GeoMode) -> None:
    resolver = RegionResolver(mode)
    allowed = set(REGIONS) if mode != "country" else set(COUNTRY_BY_CODE.values()) | {UNKNOWN}
    for ip in ("8.8.8.8", "1.0.16.1", "41.0.0.1", "200.1.1.1", "::ffff:81.2.69.160", "x"):
        assert resolver.resolve(ip) in allowed


def test_resolver_keeps_no_address() -> None:
    resolver = RegionResolver("region")
    before = dict(resolver._table)
    for ip in ("8.8.8.8", "::ffff:8.8.8.8", "10.0.0.1", "garbage"):
        resolver.resolve(ip)
    assert not hasattr(resolver, "__dict__")  # slots only: nowhere to put an address
    assert resolver._table == before

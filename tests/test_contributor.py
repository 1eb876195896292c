from __future__ import annotations

import pytest

from relay.privacy.contributor import (
    CONTRIBUTOR_KEY_BYTES,
    SALT_BYTES,
    WindowSalts,
    client_material,
    contributor_key,
    network_material,
    source_network,
    ua_family,
)

W0 = 1_700_000_000_000
W1 = W0 + 300_000

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36"
)
CHROME_ANDROID = (
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
FIREFOX_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) FxiOS/125.0 Mobile/15E148 Safari/605.1.15"
)
SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1"
)
SAFARI_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15"
)
CHROME_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) CriOS/124.0.6367.88 Mobile/15E148 Safari/604.1"
)
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80"
)
OPERA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 OPR/110.0.0.0"
)
CURL = "curl/8.5.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
GOOGLEBOT_MOBILE = (
    "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.6367.155 Mobile Safari/537.36 "
    "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
)


# Salts


def test_salt_is_stable_within_a_window() -> None:
    salts = WindowSalts()
    salt = salts.salt_for(W0)
    assert len(salt) == SALT_BYTES
    assert salts.salt_for(W0) is salt
    assert salts.windows() == [W0]


def test_windows_get_independent_salts() -> None:
    salts = WindowSalts()
    assert salts.salt_for(W0) != salts.salt_for(W1)
    assert salts.windows() == [W0, W1]


def test_destroyed_salt_is_replaced_by_a_new_one() -> None:
    salts = WindowSalts()
    old = salts.salt_for(W0)
    salts.destroy(W0)
    assert salts.windows() == []
    assert salts.salt_for(W0) != old


def test_destroy_unknown_window_is_a_no_op() -> None:
    salts = WindowSalts()
    salts.destroy(W0)
    assert salts.windows() == []


def test_restore() -> None:
    salt = bytes(range(SALT_BYTES))
    salts = WindowSalts()
    salts.restore(W0, salt)
    assert salts.salt_for(W0) == salt
    salts.restore(W0, bytes(salt))  # the same salt again is fine
    with pytest.raises(ValueError, match="different salt"):
        salts.restore(W0, bytes(SALT_BYTES))
    with pytest.raises(ValueError, match="32 bytes"):
        salts.restore(W1, b"short")
    assert salts.windows() == [W0]


# Keys


def test_same_window_and_material_give_the_same_key() -> None:
    salts = WindowSalts()
    material = client_material("user-1")
    assert contributor_key(salts.salt_for(W0), material) == contributor_key(
        salts.salt_for(W0), material
    )


def test_different_windows_give_different_keys() -> None:
    salts = WindowSalts()
    material = client_material("user-1")
    assert contributor_key(salts.salt_for(W0), material) != contributor_key(
        salts.salt_for(W1), material
    )


def test_destroyed_salt_gives_a_different_key() -> None:
    salts = WindowSalts()
    material = client_material("user-1")
    before = contributor_key(salts.salt_for(W0), material)
    salts.destroy(W0)
    assert contributor_key(salts.salt_for(W0), material) != before


def test_key_is_truncated_hmac_sha256() -> None:
    import hashlib
    import hmac

    salt = bytes(range(SALT_BYTES))
    material = client_material("user-1")
    key = contributor_key(salt, material)
    assert len(key) == CONTRIBUTOR_KEY_BYTES == 8
    assert key == hmac.new(salt, material, hashlib.sha256).digest()[:8]
    assert key != hashlib.sha256(material).digest()[:8]  # keyed, not a plain hash


def test_different_materials_give_different_keys() -> None:
    salt = bytes(SALT_BYTES)
    assert contributor_key(salt, client_material("a")) != contributor_key(
        salt, client_material("b")
    )


# Materials


def test_materials_are_domain_separated() -> None:
    # A client string crafted to look like network material still differs from it.
    net = network_material("1.2.3.4", CHROME)
    assert net == b"n\x001.2.3.4\x00chrome"
    assert client_material("n\x001.2.3.4\x00chrome") != net
    assert client_material("1.2.3.4") != network_material("1.2.3.4", None)
    assert client_material("x").startswith(b"c\x00")
    assert network_material("x", None).startswith(b"n\x00")


def test_network_material_keeps_only_the_family() -> None:
    assert network_material("1.2.3.4", CHROME) == network_material(
        "1.2.3.4", CHROME.replace("124.0.0.0", "125.0.6422.60")
    )
    assert network_material("1.2.3.4", CHROME) != network_material("1.2.3.4", FIREFOX)
    assert network_material("1.2.3.4", CHROME) != network_material("1.2.3.5", CHROME)


@pytest.mark.parametrize(
    ("same", "other"),
    [
        (["192.0.2.1", "192.0.2.254", "::ffff:192.0.2.9"], "192.0.3.1"),
        (["2001:db8:1::1", "2001:db8:1:ffff::2"], "2001:db8:2::1"),
    ],
)
def test_source_network_is_the_ipv4_24_or_ipv6_48(same: list[str], other: str) -> None:
    assert len({source_network(ip) for ip in same}) == 1
    assert source_network(other) != source_network(same[0])


def test_source_networks_are_domain_separated() -> None:
    # The IPv4 /24 192.0.2 and an IPv6 /48 with the same leading bytes stay apart, and an
    # address-less peer (a proxy forwarding junk) is a network of its own.
    assert source_network("192.0.2.1") != source_network("c000:0200::")
    assert source_network("not-an-address") == b"s\x00?not-an-address"
    assert source_network("192.0.2.1") != client_material("192.0.2.1")
    assert all(
        material.startswith(b"s\x00")
        for material in (source_network("192.0.2.1"), source_network("2001:db8::1"))
    )


def test_client_material_accepts_any_string() -> None:
    assert client_material("\ud800") != client_material("\ud801")
    assert client_material("é") == b"c\x00\xc3\xa9"


# User-agent families


@pytest.mark.parametrize(
    ("user_agent", "family"),
    [
        (CHROME, "chrome"),
        (CHROME_ANDROID, "chrome-mobile"),
        (CHROME_IOS, "chrome-mobile"),
        (FIREFOX, "firefox"),
        (FIREFOX_IOS, "firefox-mobile"),
        (SAFARI_IOS, "safari-mobile"),
        (SAFARI_MAC, "safari"),
        (EDGE, "edge"),
        (OPERA, "opera"),
        (CURL, "other"),
        (GOOGLEBOT, "bot"),
        (GOOGLEBOT_MOBILE, "bot"),
        ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "bot"),
        ("axios/1.6.8", "other"),
        ("", "other"),
        (None, "other"),
    ],
)
def test_ua_family(user_agent: str | None, family: str) -> None:
    assert ua_family(user_agent) == family

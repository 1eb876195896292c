"""The documented example config is the defaults, and environment overrides win over the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_exactly_the_defaults() -> None:
    example = load_settings(ROOT / "relay.example.yaml")
    assert example.model_dump(exclude={"origin"}) == Settings().model_dump(exclude={"origin"})


def test_environment_overrides_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text("window:\n  seconds: 120\n  lateness_seconds: 30\nprivacy:\n  k: 20\n")
    monkeypatch.setenv("RELAY_WINDOW__SECONDS", "60")
    settings = load_settings(config)
    assert (settings.window.seconds, settings.window.lateness_seconds) == (60, 30)
    assert settings.privacy.k == 20


def test_event_bursts_must_fit_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_INGEST__RATE_LIMIT__IP_EVENT_BURST", "10")
    with pytest.raises(ConfigError, match="ip_event_burst"):
        load_settings(None)


def test_network_threshold_and_bound_default_to_k_and_the_contributor_bound() -> None:
    privacy = Settings(privacy={"k": 7, "max_events_per_contributor": 20}).privacy
    assert (privacy.network_threshold, privacy.network_cap) == (7, 20)
    privacy = Settings(privacy={"k": 7, "k_networks": 2, "max_events_per_network": 500}).privacy
    assert (privacy.network_threshold, privacy.network_cap) == (2, 500)


@pytest.mark.parametrize(
    ("k_networks", "message"), [(1, "greater than or equal to 2"), (8, "above k")]
)
def test_k_networks_may_lower_the_threshold_never_below_2(
    monkeypatch: pytest.MonkeyPatch, k_networks: int, message: str
) -> None:
    monkeypatch.setenv("RELAY_PRIVACY__K", "7")
    monkeypatch.setenv("RELAY_PRIVACY__K_NETWORKS", str(k_networks))
    with pytest.raises(ConfigError, match=message) as error:
        load_settings(None)
    assert "privacy" in str(error.value)

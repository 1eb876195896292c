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

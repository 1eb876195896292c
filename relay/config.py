"""Configuration: one YAML file, every key overridable from the environment.

All defaults live here, in one place (as in Sentry Relay's `relay-config`). Precedence, highest
first: environment (`RELAY_` prefix, `__` between nesting levels, e.g.
`RELAY_SINK__TYPE=elasticsearch`), the YAML file, these defaults. A bad value is reported with its
dotted key, never as a traceback.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["ConfigError", "Settings", "load_settings"]

MIB = 1024 * 1024


class ConfigError(Exception):
    """The configuration is invalid; the message names every offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=0, le=65535)


class WindowConfig(_Section):
    seconds: int = Field(300, ge=1, le=86400, description="Aggregation window length.")
    lateness_seconds: int = Field(
        60, ge=0, le=3600, description="How long after its end a window stays open."
    )
    max_past_seconds: int = Field(86400, ge=0, description="Older event timestamps are rejected.")
    max_future_seconds: int = Field(60, ge=0, description="Newer event timestamps are rejected.")

    @property
    def ms(self) -> int:
        return self.seconds * 1000


class PrivacyConfig(_Section):
    mode: Literal["aggregate", "dp"] = "aggregate"
    k: int = Field(10, ge=2, description="Distinct contributors a published cell needs (P5).")
    max_events_per_contributor: int = Field(
        50, ge=1, description="Events one contributor may add to a cell per window (P4)."
    )
    geo: Literal["region", "country", "none"] = "region"
    # dp mode only (P7). Not used in aggregate mode; kept so a config can switch modes.
    epsilon: float = Field(0.1, gt=0, le=10)
    daily_epsilon_cap: float = Field(3.0, gt=0, le=100)


class SinkConfig(_Section):
    type: Literal["store", "elasticsearch", "ndjson"] = "store"
    url: str | None = None
    api_key: SecretStr | None = None
    index_prefix: str = Field("relay-", pattern=r"^[a-z0-9][a-z0-9._-]*$")
    path: Path | None = Field(None, description="ndjson only: the file appended to.")

    @model_validator(mode="after")
    def _needs_url(self) -> SinkConfig:
        if self.type == "elasticsearch" and not self.url:
            raise ValueError("sink.url is required when sink.type is elasticsearch")
        return self


class CorsConfig(_Section):
    allow_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Browser origins allowed to POST events ('*' = any; no credentials are used).",
    )
    max_age_seconds: int = Field(86400, ge=0)


class IngestConfig(_Section):
    max_events_per_request: int = Field(1000, ge=1, le=100_000)
    max_body_bytes: int = Field(1 * MIB, ge=1024, description="Limit after decompression.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For is believed (reverse proxies in front of relay).",
    )
    cors: CorsConfig = Field(default_factory=CorsConfig)


EventKind = Literal["request", "signal"]
_KINDS: tuple[EventKind, ...] = ("request", "signal")


class ClientConfig(_Section):
    """What apps are told at GET /v1/config (DESIGN §3.3); reloaded on SIGHUP."""

    enabled_kinds: list[EventKind] = Field(default_factory=lambda: list(_KINDS))
    sampling: dict[EventKind, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: dict.fromkeys(_KINDS, 1.0)
    )
    flush_interval_seconds: int = Field(30, ge=1)
    max_batch_size: int = Field(50, ge=1)
    max_age_seconds: int = Field(300, ge=0, description="Cache-Control max-age of /v1/config.")


class WalConfig(_Section):
    fsync: bool = Field(True, description="fsync each group commit (the 2xx durability promise).")
    segment_bytes: int = Field(16 * MIB, ge=64 * 1024)
    max_bytes: int = Field(1024 * MIB, ge=MIB, description="Over this, ingest answers 503.")


class OutboxConfig(_Section):
    max_bytes: int = Field(2048 * MIB, ge=MIB, description="Over this, ingest answers 503.")
    ship_interval_seconds: float = Field(1.0, gt=0)


class LeadSourceConfig(_Section):
    type: Literal["store", "elasticsearch"] = "store"
    url: str | None = None
    api_key: SecretStr | None = None


class LeadListenConfig(ListenConfig):
    port: int = Field(8788, ge=0, le=65535)


class LeadConfig(_Section):
    listen: LeadListenConfig = Field(default_factory=LeadListenConfig)
    source: LeadSourceConfig = Field(default_factory=LeadSourceConfig)
    registry: Path | None = Field(None, description="Default: <data_dir>/registry.yaml")


class LogConfig(_Section):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


def _default_origin() -> str:
    # An origin must not contain '+' or white space (DESIGN §5.4).
    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in ".-_") or "localhost"
    return f"relay.local/{host}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    origin: str = Field(default_factory=_default_origin, pattern=r"^[^+\s]{1,255}$")
    listen: ListenConfig = Field(default_factory=ListenConfig)
    data_dir: Path = Path("./relay-data")
    window: WindowConfig = Field(default_factory=WindowConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    wal: WalConfig = Field(default_factory=WalConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    lead: LeadConfig = Field(default_factory=LeadConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    shutdown_timeout: float = Field(10.0, gt=0, le=600)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; the environment must win over it.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _available(self) -> Settings:
        # Refuse rather than sign batches that claim a mode this build does not implement.
        if self.privacy.mode == "dp":
            raise ValueError("privacy.mode dp is not available in this release; use aggregate")
        if self.sink.type == "elasticsearch":
            raise ValueError("sink.type elasticsearch is not available in this release")
        return self

    @property
    def registry_path(self) -> Path:
        return self.lead.registry or self.data_dir / "registry.yaml"


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        env = "RELAY_" + "__".join(str(part).upper() for part in err["loc"])
        lines.append(f"  {key}: {err['msg']} (set in the config file or {env})")
    return "invalid configuration:\n" + "\n".join(lines)


def load_settings(path: Path | None = None) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError naming bad keys."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None

"""Configuration: one YAML file, every key overridable from the environment.

All defaults live here, in one place (as in Sentry Relay's `relay-config`). Precedence, highest
first: environment (`RELAY_` prefix, `__` between nesting levels, e.g.
`RELAY_SINK__TYPE=elasticsearch`), the YAML file, these defaults. A bad value is reported with its
dotted key, never as a traceback.
"""

from __future__ import annotations

import re
import socket
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from relay.core.indices import MAX_INDEX_NAME, index_name
from relay.core.vocabulary import NodeRef
from relay.privacy.ledger import plan_budget

__all__ = ["ConfigError", "Settings", "load_settings"]

MIB = 1024 * 1024


class ConfigError(Exception):
    """The configuration is invalid; the message names every offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenConfig(_Section):
    host: str = Field("127.0.0.1", description="Address of the app-facing API.")
    port: int = Field(8787, ge=0, le=65535, description="Port of the app-facing API.")


class WindowConfig(_Section):
    seconds: int = Field(
        300,
        ge=1,
        le=86400,
        description="Aggregation window (1 – 86 400), aligned to the Unix epoch.",
    )
    lateness_seconds: int = Field(
        60, ge=0, le=3600, description="A window is sealed this long after it ends (0 – 3600)."
    )
    max_past_seconds: int = Field(
        86400, ge=0, description="Older event timestamps are rejected (`too_old`)."
    )
    max_future_seconds: int = Field(
        60, ge=0, description="Later event timestamps are rejected (`too_new`)."
    )
    max_memory_bytes: int = Field(
        512 * MIB,
        ge=MIB,
        description=(
            "Budget for open windows' state (~100 B per contributor per cell); over it ingest "
            "answers 503."
        ),
    )
    # Node ids come from clients (Atlas names distributors by URL host): bound the node space,
    # dropping and counting (stat over_budget) rather than letting invented nodes fill memory.
    max_nodes: int = Field(
        1000,
        ge=1,
        description=(
            "Distinct nodes per window; events for further nodes are dropped and counted "
            "(`over_budget`); `privacy.nodes` are exempt."
        ),
    )
    max_cells_per_network: int = Field(
        100,
        ge=1,
        description=(
            "New cells one source network may open per window; past it: dropped, `over_budget`."
        ),
    )

    @property
    def ms(self) -> int:
        return self.seconds * 1000


class PrivacyConfig(_Section):
    mode: Literal["aggregate", "dp"] = Field(
        "aggregate",
        description=(
            "`aggregate` (k-threshold) or `dp` (differential privacy; see [Differential "
            "privacy mode](privacy.md#differential-privacy-mode))."
        ),
    )
    k: int = Field(
        10,
        ge=2,
        description=(
            "Aggregate mode: distinct contributors a published cell needs (≥ 2); ignored in "
            "dp mode."
        ),
    )
    k_networks: int | None = Field(
        None,
        ge=2,
        description=(
            "Aggregate mode: distinct source networks (IPv4 /24, IPv6 /48) a published cell "
            "needs; may lower the threshold, 2 ≤ k_networks ≤ k. Unset: k."
        ),
    )
    max_events_per_contributor: int = Field(
        50, ge=1, description="Events one contributor adds to one cell per window."
    )
    max_events_per_network: int | None = Field(
        None,
        ge=1,
        description=(
            "Events one source network adds to one cell per window, whatever ids its clients "
            "send. Unset: `max_events_per_contributor`."
        ),
    )
    geo: Literal["region", "country", "none"] = Field(
        "region", description="`region` (continent), `country` (opt-in) or `none` (always `ZZ`)."
    )
    # dp mode only (P7; relay/privacy/ledger.py, docs/privacy.md "Differential privacy mode").
    # Not used in aggregate mode; kept so a config can switch modes. ε values are exact decimals.
    max_cells_per_contributor: int = Field(
        2,
        ge=1,
        le=1000,
        description=(
            "dp mode only: cells one contributor adds to per window (1 – 1000); more: `over_cap`."
        ),
    )
    epsilon: Annotated[Decimal, Field(gt=0, le=10)] | None = Field(
        None,
        description=(
            "dp mode only: ε of one cell's release per window, a decimal (0 < ε ≤ 10); unset: "
            "cap / (windows a day × cells), rounded down to 2 significant digits."
        ),
    )
    daily_epsilon_cap: Decimal = Field(
        Decimal("0.3"),
        gt=0,
        le=100,
        description=(
            "dp mode only: most ε one contributor-day may cost (Tor's budget); the relay "
            "refuses to start over it."
        ),
    )
    nodes: list[NodeRef] = Field(
        default_factory=list,
        description=(
            "`[{role, id}, …]`, the public nodes. dp mode (required): whose cells (× regions) "
            "are published every window. aggregate mode (optional): exempt from the node "
            "budgets."
        ),
    )

    @property
    def network_threshold(self) -> int:
        """k_networks in effect: distinct source networks a published cell needs."""
        return self.k if self.k_networks is None else self.k_networks

    @property
    def network_cap(self) -> int:
        """max_events_per_network in effect."""
        if self.max_events_per_network is None:
            return self.max_events_per_contributor
        return self.max_events_per_network

    @model_validator(mode="after")
    def _consistent(self) -> PrivacyConfig:
        if self.k_networks is not None and self.k_networks > self.k:
            raise ValueError(
                "privacy.k_networks may lower the network threshold, not raise it above k"
            )
        if len({(node["role"], node["id"]) for node in self.nodes}) != len(self.nodes):
            raise ValueError("privacy.nodes lists a node twice")
        if self.mode != "dp":
            return self
        if not self.nodes:
            raise ValueError(
                "privacy.nodes must list the nodes to publish in dp mode (every listed node × "
                "region is published each window, whatever the data)"
            )
        if self.geo == "country":
            raise ValueError(
                "privacy.geo country is not supported in dp mode (its fixed publication would be "
                "every node × ~250 countries); use region or none"
            )
        return self


class SinkConfig(_Section):
    type: Literal["store", "elasticsearch", "ndjson"] = Field(
        "store", description="`store` (embedded SQLite), `elasticsearch` or `ndjson`."
    )
    url: str | None = Field(
        None,
        description=(
            "Elasticsearch only, required for it: the cluster URL, e.g. "
            "`https://es.example.org:9200`."
        ),
    )
    api_key: SecretStr | None = Field(
        None,
        description=(
            "Elasticsearch only: the encoded API key from `relay es-setup` (write-only, "
            "`create_doc`); keep it in the environment, not the file."
        ),
    )
    index_prefix: str = Field(
        "relay-",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description=(
            "Prefix of the `_index` names in documents (`<prefix>batches-<origin "
            "slug>-YYYY.MM`); with `elasticsearch`, a prefix and origin whose index names "
            "would exceed 255 bytes are refused at start."
        ),
    )
    path: Path | None = Field(
        None, description="ndjson only: the file appended to. None: `<data_dir>/documents.ndjson`."
    )
    ca_certs: Path | None = Field(
        None, description="Elasticsearch only: CA bundle for an `https` URL with a private CA."
    )
    request_timeout_seconds: float = Field(
        30,
        gt=0,
        le=600,
        description=(
            "Elasticsearch only: time limit of one bulk request; a timeout is retried (the "
            "re-send answers 409 for what was stored)."
        ),
    )
    # A failed ship is retried after a jittered delay that doubles up to the cap, for ever: the
    # outbox byte cap, not an attempt count, bounds how long a sink may stay away.
    retry_base_seconds: float = Field(
        0.5,
        gt=0,
        description=(
            "First delay after a failed ship; it doubles per failure, jittered (half to full)."
        ),
    )
    retry_max_seconds: float = Field(
        60,
        gt=0,
        description=(
            "Cap of that delay; retries never stop (the `outbox.max_bytes` cap bounds an "
            "outage, not an attempt count)."
        ),
    )

    @model_validator(mode="after")
    def _needs_url(self) -> SinkConfig:
        if self.type == "elasticsearch" and not self.url:
            raise ValueError("sink.url is required when sink.type is elasticsearch")
        if self.retry_max_seconds < self.retry_base_seconds:
            raise ValueError("sink.retry_max_seconds must be at least sink.retry_base_seconds")
        return self


class StoreConfig(_Section):
    retention_days: int | None = Field(
        None,
        ge=1,
        description=(
            "Embedded store: `relay retention` deletes batches whose window ended this many "
            "days ago, with their summaries, except held ones (the store's counterpart of "
            "`relay es-setup --retention-days`). None: keep everything."
        ),
    )


class CorsConfig(_Section):
    allow_origins: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Browser origins allowed to call the API (`*` = any; no credentials are used).",
    )
    max_age_seconds: int = Field(86400, ge=0, description="Preflight cache time.")


class RateLimitConfig(_Section):
    """Token buckets (rate per second, burst) per client IP and per token; 429 past them.

    Per-IP limits are generous because many users can share one address (carrier-grade NAT);
    tokens belong to server-side apps or gateways that speak for many users.
    """

    enabled: bool = Field(True, description="`false` lifts all rate limits.")
    ip_requests_per_second: float = Field(
        50, gt=0, description="Requests per second per client IP (token bucket rate); past it 429."
    )
    ip_request_burst: int = Field(100, ge=1, description="Burst of requests per client IP.")
    ip_events_per_second: float = Field(
        5_000, gt=0, description="Events per second per client IP; past it 429."
    )
    ip_event_burst: int = Field(
        10_000,
        ge=1,
        description="Burst of events per client IP; must be ≥ `ingest.max_events_per_request`.",
    )
    token_requests_per_second: float = Field(
        500, gt=0, description="Requests per second per token; past it 429."
    )
    token_request_burst: int = Field(1_000, ge=1, description="Burst of requests per token.")
    token_events_per_second: float = Field(
        50_000, gt=0, description="Events per second per token; past it 429."
    )
    token_event_burst: int = Field(
        100_000,
        ge=1,
        description="Burst of events per token; must be ≥ `ingest.max_events_per_request`.",
    )
    max_tracked: int = Field(100_000, ge=100, description="Buckets kept in memory at most.")


class AuthConfig(_Section):
    required: bool = Field(False, description="Refuse ingest without a valid token (401).")
    bearer_tokens: dict[str, SecretStr] = Field(
        default_factory=dict, description="Static tokens for server-side apps: name → token."
    )
    session_issuers: list[str] = Field(
        default_factory=list,
        description="Verifier key strings of gateways that sign session tokens.",
    )
    session_max_ttl_seconds: int = Field(
        86_400, ge=60, description="Longest session token lifetime accepted."
    )


class IngestConfig(_Section):
    max_events_per_request: int = Field(
        1000, ge=1, le=100_000, description="Events per request at most; more: 413."
    )
    max_body_bytes: int = Field(
        1 * MIB, ge=1024, description="Body limit after decompression; more: 413."
    )
    max_header_bytes: int = Field(
        8190, ge=1024, description="Longest request line / header accepted."
    )
    body_timeout_seconds: float = Field(
        10, gt=0, description="The body must arrive within this; else 408."
    )
    idle_timeout_seconds: float = Field(
        15, gt=0, description="A connection without a complete request by then is closed."
    )
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)

    @model_validator(mode="after")
    def _bursts_fit_a_request(self) -> IngestConfig:
        # A request larger than an event burst could never pass, whatever it waited.
        limits = self.rate_limit
        if min(limits.ip_event_burst, limits.token_event_burst) < self.max_events_per_request:
            raise ValueError(
                "rate_limit.ip_event_burst and rate_limit.token_event_burst must be at least "
                "max_events_per_request"
            )
        return self

    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose `X-Forwarded-For` is believed.",
    )
    cors: CorsConfig = Field(default_factory=CorsConfig)


EventKind = Literal["request", "signal"]
_KINDS: tuple[EventKind, ...] = ("request", "signal")


class ClientConfig(_Section):
    """What apps are told at GET /v1/config (DESIGN §3.3); reloaded on SIGHUP."""

    enabled_kinds: list[EventKind] = Field(
        default_factory=lambda: list(_KINDS), description="`/v1/config`: kinds clients should send."
    )
    sampling: dict[EventKind, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=lambda: dict.fromkeys(_KINDS, 1.0),
        description="`/v1/config`: share of each kind to send (0 – 1).",
    )
    flush_interval_seconds: int = Field(
        30, ge=1, description="`/v1/config`: how often clients send."
    )
    max_batch_size: int = Field(50, ge=1, description="`/v1/config`: events per request.")
    max_age_seconds: int = Field(300, ge=0, description="`Cache-Control: max-age` of `/v1/config`.")


class WalConfig(_Section):
    fsync: bool = Field(
        True, description="fsync each group commit; `false` gives up the 2xx durability promise."
    )
    segment_bytes: int = Field(
        16 * MIB, ge=64 * 1024, description="A segment rotates at this size and at each seal."
    )
    max_bytes: int = Field(1024 * MIB, ge=MIB, description="WAL cap; over it ingest answers 503.")


class OutboxConfig(_Section):
    max_bytes: int = Field(
        2048 * MIB,
        ge=MIB,
        description=(
            "Cap on unshipped batches (as stored: ~1.2 kB per summary); over it ingest answers 503."
        ),
    )
    ship_interval_seconds: float = Field(
        1.0, gt=0, description="Idle polling interval of the shipper."
    )


class LeadSourceConfig(_Section):
    type: Literal["store", "elasticsearch"] = Field(
        "store", description="`store` (`<data_dir>/store.sqlite`) or `elasticsearch`."
    )
    url: str | None = Field(None, description="Elasticsearch only; required for that type.")
    api_key: SecretStr | None = Field(
        None, description="Elasticsearch only: a read key (`relay es-setup --create-reader-key`)."
    )
    index_prefix: str = Field(
        "relay-",
        pattern=r"^[a-z0-9][a-z0-9._-]*$",
        description="Elasticsearch only: reads `<prefix>batches-*` and `<prefix>summaries-*`.",
    )
    ca_certs: Path | None = Field(
        None, description="Elasticsearch only: CA bundle for an https URL."
    )

    @model_validator(mode="after")
    def _needs_url(self) -> LeadSourceConfig:
        if self.type == "elasticsearch" and not self.url:
            raise ValueError("lead.source.url is required when lead.source.type is elasticsearch")
        return self


class LeadListenConfig(ListenConfig):
    host: str = Field("127.0.0.1", description="Address of `relay lead` (API and dashboard).")
    port: int = Field(8788, ge=0, le=65535, description="Port of `relay lead`.")


class LeadThresholds(_Section):
    """When `relay lead` calls a node down, degraded or healthy (docs/leads.md, "Node status")."""

    min_requests: int = Field(
        10,
        ge=1,
        description="Fewer requests: status unknown ([Node status](leads.md#node-status)).",
    )
    down_success_ratio: float = Field(0.5, ge=0, le=1, description="Below it: down.")
    degraded_success_ratio: float = Field(0.95, ge=0, le=1, description="Below it: degraded.")
    degraded_ttfb_p90_ms: float | None = Field(
        2000.0, gt=0, description="p90 time to first byte above it: degraded (null = off)."
    )
    degraded_duration_p90_ms: float | None = Field(
        None, gt=0, description="p90 download time above it: degraded (null = off)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LeadThresholds:
        if self.down_success_ratio > self.degraded_success_ratio:
            raise ValueError("down_success_ratio must not exceed degraded_success_ratio")
        return self


class LeadMetricsConfig(_Section):
    """What `relay lead` serves at /metrics and judges for alerts (docs/leads.md "Alerts")."""

    range_seconds: int = Field(
        900,
        ge=60,
        le=86400,
        description=(
            "`/metrics` and notifications judge nodes on this trailing range "
            "([Alerts](leads.md#alerts))."
        ),
    )
    remember_seconds: int = Field(
        86400,
        ge=60,
        le=30 * 86400,
        description="A node with verified traffic this recently stays listed when silent.",
    )
    max_nodes: int = Field(1000, ge=1, le=100_000, description="Most nodes listed (the busiest).")


class WebhookConfig(_Section):
    # A Discord or Slack webhook URL is itself the secret that lets anyone post: never shown.
    url: SecretStr
    format: Literal["json", "discord", "slack"] = "json"

    @field_validator("url")
    @classmethod
    def _http(cls, url: SecretStr) -> SecretStr:
        if not url.get_secret_value().startswith(("http://", "https://")):
            raise ValueError("a webhook url starts with http:// or https://")
        return url


class LeadNotifyConfig(_Section):
    webhooks: list[WebhookConfig] = Field(
        default_factory=list,
        description=(
            "`[{url, format: json|discord|slack}]`: status changes posted there "
            "([Alerts](leads.md#alerts))."
        ),
    )
    interval_seconds: float = Field(
        60, gt=0, le=3600, description="How often statuses and findings are compared."
    )
    max_per_hour: int = Field(
        30, ge=1, description="Messages per webhook per hour; more are dropped and counted."
    )
    attempts: int = Field(5, ge=1, le=20, description="Tries per message (no answer, 429, 5xx).")
    retry_initial_seconds: float = Field(
        2.0, gt=0, description="First backoff between tries; it doubles per try."
    )
    timeout_seconds: float = Field(10.0, gt=0, le=120, description="Per-post timeout.")


class LeadConfig(_Section):
    listen: LeadListenConfig = Field(default_factory=LeadListenConfig)
    source: LeadSourceConfig = Field(default_factory=LeadSourceConfig)
    registry: Path | None = Field(
        None,
        description=(
            "Operator registry; `relay serve` adds its own key there on first start; `relay "
            "witness` polls the entries of it that have a `url`. None: "
            "`<data_dir>/registry.yaml`."
        ),
    )
    thresholds: LeadThresholds = Field(default_factory=LeadThresholds)
    api_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Read-only bearer tokens (name → token) for the lead API; none: open.",
    )
    verify_interval_seconds: float = Field(
        15, gt=0, le=86400, description="How often `relay lead` looks for new data to verify."
    )
    metrics: LeadMetricsConfig = Field(default_factory=LeadMetricsConfig)
    notify: LeadNotifyConfig = Field(default_factory=LeadNotifyConfig)
    key: Path | None = Field(
        None,
        description=(
            "The lead's Ed25519 key (`relay keygen --origin <lead name> --out FILE`), signing "
            "holds and period reports. None: `<data_dir>/lead.key`."
        ),
    )


def _default_witness_name() -> str:
    return _default_origin().replace("relay.local/", "witness.local/", 1)


class WitnessConfig(_Section):
    """`relay witness` (issue 17): cosigns the checkpoints of every registry operator with a url."""

    name: str = Field(
        default_factory=_default_witness_name,
        pattern=r"^[^+\s]{1,255}$",
        json_schema_extra={"shown_default": "witness.local/<hostname>"},
        description=(
            "`relay witness`: the key name its key is generated with (by convention a "
            "schema-less URL)."
        ),
    )
    key: Path | None = Field(
        None,
        description=(
            "`relay witness`: its Ed25519 key file (signed-note private key format, mode "
            "0600), generated on first start. None: `<data_dir>/witness/witness.key`."
        ),
    )
    poll_interval_seconds: float = Field(
        60, gt=0, le=86400, description="`relay witness`: time between rounds over the operators."
    )
    timeout_seconds: float = Field(
        10, gt=0, le=300, description="`relay witness`: limit of one HTTP request to an operator."
    )


class MetricsListenConfig(ListenConfig):
    host: str = Field(
        "127.0.0.1",
        description="Address of the operator listener: `/metrics` and the detailed `/readyz` "
        "(P9); no CORS, no auth, so keep it private.",
    )
    port: int = Field(
        9787, ge=0, le=65535, description="Port of the operator listener (`0`: any free port)."
    )


class MetricsConfig(_Section):
    """The operator listener: `/metrics` and the detailed `/readyz` (DESIGN §9, P9).

    Exact operational counts (accepted, rejected, open-window sizes) would let anyone who can
    reach them follow individual contributions, which dp mode's noise is there to hide: they
    are served here, on loopback by default, never on the public ingest listener.
    """

    listen: MetricsListenConfig = Field(default_factory=MetricsListenConfig)


class LogConfig(_Section):
    format: Literal["text", "json"] = Field(
        "text", description="`text` or `json` (one object per line, stderr)."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="`debug`, `info`, `warning`, `error`."
    )


def _default_origin() -> str:
    # An origin must not contain '+' or white space (DESIGN §5.4).
    host = "".join(ch for ch in socket.gethostname() if ch.isalnum() or ch in ".-_") or "localhost"
    return f"relay.local/{host}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RELAY_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    origin: str = Field(
        default_factory=_default_origin,
        pattern=r"^[^+\s]{1,255}$",
        json_schema_extra={"shown_default": "relay.local/<hostname>"},
        description=(
            "Name of this relay in batches, checkpoints and the verifier key; no `+` or white "
            "space, ≤ 255 characters; must match the key in `data_dir`."
        ),
    )
    listen: ListenConfig = Field(default_factory=ListenConfig)
    data_dir: Path = Field(
        Path("./relay-data"),
        json_schema_extra={"shown_default": "./relay-data"},
        description=(
            "Key, registry, WAL, outbox and embedded store; `relay serve` makes it 0700 and "
            "its files 0600 (umask 077)."
        ),
    )
    window: WindowConfig = Field(default_factory=WindowConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    sink: SinkConfig = Field(default_factory=SinkConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    wal: WalConfig = Field(default_factory=WalConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    lead: LeadConfig = Field(default_factory=LeadConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    witness: WitnessConfig = Field(default_factory=WitnessConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    shutdown_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds allowed on SIGTERM for sealing and shipping."
    )

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

    @field_validator("sink")
    @classmethod
    def _index_names_fit(cls, sink: SinkConfig, info: ValidationInfo) -> SinkConfig:
        # Indices are named after the origin (DESIGN §7); Elasticsearch refuses a name over
        # 255 bytes, which would dead-letter every document.
        origin = info.data.get("origin")  # absent when origin itself is invalid
        if sink.type == "elasticsearch" and isinstance(origin, str):
            longest = index_name(sink.index_prefix, "summaries", origin, 0)
            if len(longest.encode()) > MAX_INDEX_NAME:
                raise ValueError(
                    f"index names such as {longest!r} would exceed Elasticsearch's "
                    f"{MAX_INDEX_NAME} bytes: shorten origin or sink.index_prefix"
                )
        return sink

    @field_validator("privacy")
    @classmethod
    def _privacy_budget(cls, privacy: PrivacyConfig, info: ValidationInfo) -> PrivacyConfig:
        # The budget ledger (P7): refuse a dp configuration whose daily ε exceeds its cap.
        window = info.data.get("window")  # absent when window itself is invalid
        if privacy.mode == "dp" and isinstance(window, WindowConfig):
            plan_budget(
                epsilon=privacy.epsilon,
                max_events=privacy.max_events_per_contributor,
                cells=privacy.max_cells_per_contributor,
                window_seconds=window.seconds,
                cap=privacy.daily_epsilon_cap,
            )
        return privacy

    @property
    def registry_path(self) -> Path:
        return self.lead.registry or self.data_dir / "registry.yaml"

    @property
    def lead_key_path(self) -> Path:
        return self.lead.key or self.data_dir / "lead.key"


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        env = "RELAY_" + "__".join(str(part).upper() for part in err["loc"])
        lines.append(f"  {key}: {err['msg']} (set in the config file or {env})")
    return "invalid configuration:\n" + "\n".join(lines)


# A quoted stretch of the file in a YAML message, longer than the one character a message may
# name ("found character '\t'"): a tag or a token, possibly a secret's.
_QUOTED = re.compile(r"'[^']{2,}'|\"[^\"]{2,}\"")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Where and what, without the file's content.

    PyYAML's own message quotes the offending line, which may hold a secret (an api_key);
    this goes to stderr and the journal.
    """
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or "syntax error"
    context = getattr(error, "context", None)
    what = _QUOTED.sub("(…)", f"{context}: {problem}" if context else problem)
    if mark is None:
        return what
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"


def load_settings(path: Path | None = None) -> Settings:
    """Read the YAML file (if any) and the environment; raise ConfigError naming bad keys."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None

"""Settings: every knob is a `VIDGATE_*` environment variable (see README, "Configuration")."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import Field, NonNegativeFloat, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: scheme://host[:port], nothing after it: what a browser sends in `Origin`.
_ORIGIN = re.compile(r"https?://(\[[0-9a-f:.]+\]|[^/?#\s:\[\]@]+)(:\d{1,5})?", re.IGNORECASE)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDGATE_", extra="ignore")

    #: Where SQLite, uploads and results live when no other store is configured.
    data_dir: Path = Path("./data")
    #: SQLAlchemy URL; empty means `sqlite:///<data_dir>/vidgate.db`.
    database_url: str = ""
    #: PostgreSQL connections each process keeps open, and how many more it may open at peaks.
    #: Size them so that processes x (pool + overflow) stays under the server's max_connections.
    database_pool_size: int = Field(default=10, ge=1)
    database_max_overflow: int = Field(default=20, ge=0)
    #: Base URL clients reach this server at; used to build signed file URLs.
    #: Empty means "derive from the incoming request".
    public_url: str = ""
    #: HMAC key for signed file URLs. Empty: one is generated once and kept in the database.
    secret_key: str = ""

    host: str = "127.0.0.1"
    port: int = 8000
    #: Peers whose X-Forwarded-Proto/-For `vidgate serve` believes (comma-separated IPs or CIDR
    #: networks, or `*`): the reverse proxy. Others' headers are ignored, so they cannot spoof https.
    forwarded_allow_ips: str = "127.0.0.1,::1"

    #: How long result URLs stay valid after completion, in seconds (apimart documents 24 h).
    result_ttl_seconds: int = 86_400
    #: How long upload URLs stay valid, in seconds (apimart documents 72 h).
    upload_ttl_seconds: int = 259_200

    # --- storage (see storage.py) ------------------------------------------------------------------
    #: Where uploads and results are kept: empty for `<data_dir>/files`, or `s3://bucket/prefix`.
    storage_url: str = ""
    #: S3-compatible endpoint (MinIO, R2, ...); empty for AWS S3 itself.
    s3_endpoint_url: str = ""
    #: Endpoint that result links name, when clients reach S3 by another address than vidgate does.
    s3_public_endpoint_url: str = ""
    #: Region for signing; empty: the AWS chain's (`AWS_REGION`, config files), else us-east-1.
    s3_region: str = ""
    #: Empty: the standard AWS credential chain (environment, shared files, instance role).
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    #: Workers delete expired uploads and results this often, in seconds (0: only `vidgate gc`).
    gc_interval_seconds: float = Field(default=3600.0, ge=0)

    #: Allow image URLs on loopback/private ranges (tests, trusted LANs). Off by default: SSRF guard.
    allow_private_urls: bool = False
    #: Total bytes a task may download for its inputs.
    max_input_bytes: int = 200 * 1024 * 1024
    #: Seconds for one input download, connect to last byte.
    fetch_timeout_seconds: float = 30.0

    #: Worker: seconds a claim is held before another worker may take the task over.
    lease_seconds: float = 30.0
    #: Worker: seconds between looks for due tasks when nothing woke it.
    poll_interval_seconds: float = 0.5
    #: Worker on PostgreSQL: wake up on LISTEN/NOTIFY when tasks are submitted or made due, instead
    #: of at the next poll. Turn off behind a pooler in transaction mode (pgbouncer), where LISTEN
    #: does not work; polling alone still serves every task.
    listen_notify: bool = True
    #: Worker: tasks rendered at once by the local CPU renderer (per process).
    local_concurrency: int = Field(default=1, ge=1)
    #: Worker: attempts before a task that keeps crashing its worker is failed.
    max_attempts: int = Field(default=3, ge=1)

    #: Providers per model, in order of preference, as JSON: {"viduq3": ["vidu", "local"]}.
    #: A model not listed goes to its upstream when credentials are set, else to `local`.
    routes: dict[str, list[str]] = Field(default_factory=dict)

    #: Price file (TOML or JSON, see README "Prices"); empty means the shipped defaults.
    prices_file: str = ""

    #: Seconds a task may take from submit to result before it is failed (upstreams included).
    task_deadline_seconds: float = 3600.0

    # --- webhooks (webhooks.py, webhook_dispatch.py; docs/api.md "Webhooks") ----------------------
    #: Seconds between the attempts of a failing delivery; the last one repeats until the window ends.
    #: JSON list, e.g. VIDGATE_WEBHOOK_RETRY_SCHEDULE='[0.2, 0.2]' in tests. Each gets +-20 % jitter.
    webhook_retry_schedule: list[NonNegativeFloat] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0], min_length=1
    )
    #: Seconds after an event (or a redeliver) during which a failing delivery is retried.
    webhook_retry_window_seconds: float = Field(default=86_400.0, gt=0)
    #: Seconds for one delivery attempt, connect to answer.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Deliveries one worker process sends at once.
    webhook_concurrency: int = Field(default=16, ge=1)

    # --- keys: admin API and rate limits -----------------------------------------------------------
    #: Bearer token of the /admin API (keys, limits, top-ups). Empty: the admin API does not exist.
    admin_token: str = ""
    #: Redis for per-key request rate counters, e.g. redis://127.0.0.1:6379/0. Empty: the database.
    redis_url: str = ""
    #: Prefix of every Redis key vidgate writes (deployments sharing one Redis need their own).
    redis_prefix: str = "vidgate:"

    # --- operations (metrics.py, logs.py; docs/operations.md) --------------------------------------
    #: Serve Prometheus metrics at GET /metrics (off: the route does not exist and nothing is counted).
    metrics: bool = False
    #: When set, /metrics wants `Authorization: Bearer <token>`; empty: open (keep it off the internet).
    metrics_token: str = ""
    #: `vidgate worker` serves its own counters at http://<host>:<port>/metrics (with VIDGATE_METRICS;
    #: the same token). 0: off. Each worker process on a host needs its own port.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    #: `text` (default) or `json`: one JSON object per line with request and task ids.
    log_format: str = "text"

    # --- browsers (api/console.py; docs/console.md, docs/security.md "CORS") -----------------------
    #: Serve the web console at `/` (static files in the package; off: `/` is a 404).
    console: bool = True
    #: Origins (comma-separated, e.g. `https://app.example.com`) whose pages may call the API from
    #: the browser. Empty: no CORS headers at all (the console is same-origin and needs none).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- upstreams (a provider is enabled when its API key is set) ---------------------------------
    vidu_api_key: str = ""
    vidu_base_url: str = "https://api.vidu.com"
    #: Jobs in flight at Vidu for this key (Vidu runs 5 per organisation by default).
    vidu_max_in_flight: int = Field(default=5, ge=1)
    #: Ask Vidu to call back on state changes (needs VIDGATE_PUBLIC_URL reachable by Vidu).
    vidu_callbacks: bool = False
    pixverse_api_key: str = ""
    pixverse_base_url: str = "https://app-api.pixverse.ai/openapi/v2"
    pixverse_max_in_flight: int = Field(default=5, ge=1)
    apimart_api_key: str = ""
    apimart_base_url: str = "https://api.apimart.ai"
    apimart_max_in_flight: int = Field(default=50, ge=1)
    #: Seconds between polls of an upstream job.
    upstream_poll_seconds: float = Field(default=5.0, gt=0)
    #: Base of the jittered exponential backoff after an upstream said "busy" or failed, in seconds.
    upstream_backoff_seconds: float = Field(default=2.0, gt=0)
    #: Seconds for one upstream HTTP call.
    upstream_timeout_seconds: float = Field(default=30.0, gt=0)
    #: Largest result file vidgate re-hosts from an upstream, in bytes.
    max_result_bytes: int = 1024 * 1024 * 1024
    #: Upstream ticks one worker process runs at once (each is one short HTTP exchange).
    relay_concurrency: int = Field(default=256, ge=1)

    #: Encoder preset for the CPU renderer (x264 preset names).
    local_preset: str = "veryfast"

    # --- diffusers engine (optional extra `vidgate[gpu]`; see providers/diffusers_wan.py) ----------
    #: Checkpoint per Wan mode: a hub id or a local directory; empty: that mode is not served here.
    #: Text-to-video (WanPipeline).
    diffusers_t2v_model: str = ""
    #: Image-to-video (WanImageToVideoPipeline).
    diffusers_i2v_model: str = ""
    #: First/last-frame transition (WanImageToVideoPipeline with last_image, e.g. Wan2.1-FLF2V).
    diffusers_flf2v_model: str = ""
    #: Multi-reference, fusion and extension (WanVACEPipeline).
    diffusers_vace_model: str = ""
    #: Torch device ("cuda", "cuda:1", "cpu"); empty: cuda when available, else cpu.
    diffusers_device: str = ""
    #: Weights dtype (bfloat16, float16, float32); empty: bfloat16 on cuda, float32 on cpu.
    diffusers_dtype: str = ""
    #: Native generation size (landscape WxH); other ratios keep its area, sides a multiple of 16.
    diffusers_size: str = "832x480"
    #: Native frame rate and the most frames the model generates at once (4k+1).
    diffusers_fps: int = Field(default=16, ge=1)
    diffusers_max_frames: int = Field(default=81, ge=1)
    diffusers_steps: int = Field(default=50, ge=1)
    diffusers_guidance_scale: float = 5.0

    @field_validator("public_url", "vidu_base_url", "pixverse_base_url", "apimart_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors_origins(cls, value: object) -> object:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return value
        origins = [str(item).strip().rstrip("/") for item in items if str(item).strip()]
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"cors_origins: {origin!r} is not an origin like https://app.example.com")
        return origins

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        if value and not (value.startswith("s3://") and len(value) > len("s3://")):
            raise ValueError("storage_url must be empty (local files) or s3://bucket/prefix")
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _forwarded_allow_ips(cls, value: str) -> str:
        items = [item.strip() for item in value.split(",") if item.strip()]
        for item in items:
            if item == "*":
                continue
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {item!r} is not an IP address, a CIDR network or *"
                ) from None
        return ",".join(items)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vidgate.db').resolve()}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"


def get_settings(**overrides: object) -> Settings:
    """Build settings from the environment; only entry points call this."""
    return Settings(**overrides)  # type: ignore[arg-type]

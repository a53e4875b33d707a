"""Settings: frozen structs read from the environment once at start-up, one pattern for all.

`EnvSettings` is the pattern: a struct subclass declares its fields (type, default, bounds) and an
`ENVIRONMENT` table (variable -> field, meaning). `from_env()` loads and validates it, failing
with a `SettingsError` that names the variable; `describe()` is its part of `ragpoc --help`.
`Settings` holds what every process reads; a service with knobs of its own (the ingestor's
chunking, mockai's embedding size) owns another `EnvSettings` subclass beside its code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from libs.common.envsettings import EnvSettings, SettingsError
from libs.common.redact import redact

__all__ = [
    "ENVIRONMENT",
    "EnvSettings",
    "Settings",
    "SettingsError",
    "check_lease_timing",
    "describe_environment",
    "load_settings",
]


class Settings(EnvSettings, frozen=True, kw_only=True):
    """What every rag-poc process reads."""

    data_dir: Path = Path(".ragpoc")
    redis_url: str = ""
    redis_cluster: Literal["auto", "0", "1"] = "auto"
    database_url: str = ""
    qdrant_url: str = ""
    openai_base_url: str = "http://127.0.0.1:1573/v1"
    openai_api_key: str = "mock-key"
    chat_model: str = "mock-gpt"
    embedding_model: str = "mock-embedding"
    namespace: str = "ragpoc"
    partitions: int = 16
    host: str = "127.0.0.1"
    internal_host: str = "127.0.0.1"
    gateway_port: int = 8001
    ingestor_port: int = 8002
    mockai_port: int = 1573
    ingestor_base_url: str = ""
    runner_metrics_port: int = 0
    projector_metrics_port: int = 0
    test_hold_seconds: float = 0.0
    sentinel_dir: Path | None = None
    retrieval_k: int = 4
    llm_timeout_s: float = 60.0
    llm_max_retries: int = 2
    lock_ttl_ms: int = 30_000
    queue_timeout_s: float = 600.0
    durable_accept: bool = True
    durable_replicas: Annotated[int, msgspec.Meta(ge=0, le=5)] = 0
    dev: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    consumer_block_ms: int = 1000
    projector_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
    projector_partitions: Annotated[str, msgspec.Meta(pattern=r"^(\d+(-\d+)?(,\d+(-\d+)?)*)?$")] = (
        ""
    )
    consumer_min_idle_ms: int = 60_000  # at least 1.5 x lock_ttl_ms: see check_lease_timing
    consumer_max_deliveries: int = 5
    consumer_drain_s: float = 30.0
    runner_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 32
    delta_interval_ms: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 50
    max_body_bytes: int = 1_048_576
    sse_heartbeat_s: float = 15.0
    idempotency_ttl_s: int = 86_400
    stream_retention_s: float = 86_400.0
    trim_interval_s: float = 60.0
    up_crash_limit: int = 5
    up_crash_window_s: float = 60.0
    api_tokens: str = ""
    api_tokens_file: Path | None = None
    metrics_public: bool = True
    allow_open: bool = False
    allowed_hosts: str = ""
    max_sse_clients: Annotated[int, msgspec.Meta(ge=0)] = 10_000
    max_waiters: Annotated[int, msgspec.Meta(ge=0)] = 1_000
    run_rate_per_minute: Annotated[int, msgspec.Meta(ge=0)] = 600

    def __repr__(self) -> str:
        """The settings without the API tokens' secrets and the URLs' passwords, should they
        ever be printed."""
        hidden = {"api_tokens", "openai_api_key"}

        def shown(name: str) -> str:
            value = getattr(self, name)
            if name in hidden and value:
                return "<hidden>"
            return repr(redact(value)) if isinstance(value, str) else repr(value)

        fields = (f"{name}={shown(name)}" for name in self.__struct_fields__)
        return f"{type(self).__name__}({', '.join(fields)})"

    @property
    def cluster_mode(self) -> bool | None:
        """RAGPOC_REDIS_CLUSTER as connect_redis takes it: None means "ask the server"."""
        return None if self.redis_cluster == "auto" else self.redis_cluster == "1"

    @property
    def allowed_host_names(self) -> list[str]:
        """The Host header names the gateway answers to (RAGPOC_ALLOWED_HOSTS, comma-separated);
        empty: the default for its bind address (loopback names on loopback, any elsewhere)."""
        return [name.strip() for name in self.allowed_hosts.split(",") if name.strip()]

    @property
    def sqlalchemy_url(self) -> str:
        """The DATABASE_URL with an async driver; SQLite in the data folder when unset."""
        url = self.database_url or f"sqlite:///{self.data_dir.resolve() / 'ragpoc.db'}"
        for plain, driver in (
            ("sqlite:", "sqlite+aiosqlite:"),
            ("postgresql:", "postgresql+psycopg:"),
            ("postgres:", "postgresql+psycopg:"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def ingestor_url(self) -> str:
        """Where the gateway and runners reach the ingestor (INGESTOR_URL, else this host)."""
        if self.ingestor_base_url:
            return self.ingestor_base_url
        # an ingestor bound to every interface is reached on this machine's loopback (a
        # comparison with the wildcard address, not a bind: hence the nosec)
        wildcard = self.internal_host in ("0.0.0.0", "::", "")  # nosec B104
        host = "127.0.0.1" if wildcard else self.internal_host
        return f"http://{host}:{self.ingestor_port}"


# variable name -> (field, meaning). The field's default is in Settings.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "RAGPOC_DATA_DIR": ("data_dir", "folder for the embedded Valkey, SQLite and Qdrant data"),
    "REDIS_URL": ("redis_url", "Redis/Valkey to use; `ragpoc up` starts Valkey when unset"),
    "RAGPOC_REDIS_CLUSTER": (
        "redis_cluster",
        "1: REDIS_URL names a Redis/Valkey Cluster node; 0: a single server; auto: ask it",
    ),
    "DATABASE_URL": ("database_url", "SQL read models; SQLite in the data folder when unset"),
    "QDRANT_URL": ("qdrant_url", "Qdrant server; Qdrant local mode in the data folder when unset"),
    "OPENAI_BASE_URL": ("openai_base_url", "OpenAI-compatible endpoint (mockai by default)"),
    "OPENAI_API_KEY": ("openai_api_key", "API key for that endpoint"),
    "RAGPOC_CHAT_MODEL": ("chat_model", "chat model name"),
    "RAGPOC_EMBEDDING_MODEL": ("embedding_model", "embedding model name"),
    "RAGPOC_NAMESPACE": ("namespace", "prefix of every Redis key and stream"),
    "RAGPOC_PARTITIONS": ("partitions", "number of event-log partitions (fixed per deployment)"),
    "RAGPOC_HOST": ("host", "interface the gateway binds to (off loopback it needs API tokens)"),
    "RAGPOC_INTERNAL_HOST": (
        "internal_host",
        "interface the ingestor and mockai bind to; they have no authentication, so they stay "
        "on loopback unless their callers run elsewhere (containers: 0.0.0.0)",
    ),
    "GATEWAY_PORT": ("gateway_port", "gateway HTTP port"),
    "INGESTOR_PORT": ("ingestor_port", "ingestor HTTP port"),
    "MOCKAI_PORT": ("mockai_port", "mockai HTTP port"),
    "INGESTOR_URL": ("ingestor_base_url", "the ingestor's base URL; this host's port when unset"),
    "RUNNER_METRICS_PORT": ("runner_metrics_port", "runner Prometheus port (0: off)"),
    "PROJECTOR_METRICS_PORT": ("projector_metrics_port", "projector Prometheus port (0: off)"),
    "TEST_HOLD_SECONDS": ("test_hold_seconds", "keep every run busy this long (for race tests)"),
    "RAGPOC_SENTINEL_DIR": (
        "sentinel_dir",
        "the gateway appends a line per POST /run-agents entry, lock acquired and lock conflict "
        "to run_agents_*.log files in this folder (unset: off)",
    ),
    "RAGPOC_RETRIEVAL_K": ("retrieval_k", "chunks retrieved for each run"),
    "RAGPOC_LLM_TIMEOUT_S": ("llm_timeout_s", "timeout of one LLM call"),
    "RAGPOC_LLM_MAX_RETRIES": (
        "llm_max_retries",
        "retries, with backoff, of a transient LLM error (connection, 429, 5xx)",
    ),
    "RAGPOC_LOCK_TTL_MS": (
        "lock_ttl_ms",
        "task lock lease; a runner extends it every third of this while it works",
    ),
    "RAGPOC_QUEUE_TIMEOUT_S": (
        "queue_timeout_s",
        "how long a queued run's claim guards the task before it counts as abandoned",
    ),
    "RAGPOC_DURABLE_ACCEPT": (
        "durable_accept",
        "answer 202 to POST /run-agents only once Valkey has the command on disk (WAITAOF; "
        "used when the server has it and AOF is on)",
    ),
    "RAGPOC_DURABLE_REPLICAS": (
        "durable_replicas",
        "replicas that must also have a run command before its 202 (WAIT); 1 keeps accepted "
        "runs through a failover, and refuses runs (503) while a shard has no replica",
    ),
    "RAGPOC_DEV": ("dev", "development mode (enables per-request test knobs)"),
    "RAGPOC_LOG_LEVEL": ("log_level", "debug, info, warning or error"),
    "RAGPOC_LOG_FORMAT": ("log_format", "json, console, or auto (console on a terminal)"),
    "RAGPOC_CONSUMER_BLOCK_MS": ("consumer_block_ms", "how long a consumer blocks on XREADGROUP"),
    "RAGPOC_PROJECTOR_LINGER_MS": (
        "projector_linger_ms",
        "after a projector step, wait this long for more events to fold in one transaction",
    ),
    "RAGPOC_PROJECTOR_PARTITIONS": (
        "projector_partitions",
        "the partitions this projector follows, e.g. 0-7 or 0,2,4 (all when unset): several "
        "projectors then share the logs",
    ),
    "RAGPOC_CONSUMER_MIN_IDLE_MS": (
        "consumer_min_idle_ms",
        "idle time after which a pending entry is reclaimed from a dead consumer "
        "(at least 1.5 x RAGPOC_LOCK_TTL_MS)",
    ),
    "RAGPOC_CONSUMER_MAX_DELIVERIES": (
        "consumer_max_deliveries",
        "deliveries after which an entry is dead-lettered",
    ),
    "RAGPOC_CONSUMER_DRAIN_S": (
        "consumer_drain_s",
        "on stop, how long entries in hand may take to finish before they are left pending",
    ),
    "RAGPOC_RUNNER_CONCURRENCY": (
        "runner_concurrency",
        "runs one runner process executes at once (they wait on the LLM, not the CPU)",
    ),
    "RAGPOC_DELTA_INTERVAL_MS": (
        "delta_interval_ms",
        "least time between two streamed answer events of a run (the first goes at once; "
        "0: one event per token)",
    ),
    "RAGPOC_MAX_BODY_BYTES": ("max_body_bytes", "largest accepted HTTP request body"),
    "RAGPOC_SSE_HEARTBEAT_S": (
        "sse_heartbeat_s",
        "seconds of silence after which an SSE stream sends a heartbeat comment",
    ),
    "RAGPOC_IDEMPOTENCY_TTL_S": (
        "idempotency_ttl_s",
        "how long a POST /run-agents Idempotency-Key is remembered",
    ),
    "RAGPOC_STREAM_RETENTION_S": (
        "stream_retention_s",
        "Redis streams keep entries this long, and never trim what is unarchived or pending",
    ),
    "RAGPOC_TRIM_INTERVAL_S": (
        "trim_interval_s",
        "how often the projector trims the Redis streams (0: never)",
    ),
    "RAGPOC_UP_CRASH_LIMIT": (
        "up_crash_limit",
        "`ragpoc up` restarts a service that exits; this many exits in the window stop the stack",
    ),
    "RAGPOC_UP_CRASH_WINDOW_S": (
        "up_crash_window_s",
        "the window (seconds) in which RAGPOC_UP_CRASH_LIMIT exits are a crash loop",
    ),
    "RAGPOC_API_TOKENS": (
        "api_tokens",
        "the gateway's API tokens, comma-separated `name:scope:secret` entries (scope read or "
        "write; secret at least 16 characters). Any token turns authentication on",
    ),
    "RAGPOC_API_TOKENS_FILE": (
        "api_tokens_file",
        "a file of more API tokens, one `name:scope:secret` a line (# comments allowed)",
    ),
    "RAGPOC_METRICS_PUBLIC": (
        "metrics_public",
        "/metrics answers without a token (0: it needs a read token)",
    ),
    "RAGPOC_ALLOWED_HOSTS": (
        "allowed_hosts",
        "Host header names the gateway answers to, comma-separated (`*.example.com` for "
        "subdomains, `*` any); others get 400, against DNS rebinding. Unset: loopback names "
        "when bound to loopback, any name otherwise",
    ),
    "RAGPOC_MAX_SSE_CLIENTS": (
        "max_sse_clients",
        "event streams one gateway serves at once; more get 503 with Retry-After (0: no cap)",
    ),
    "RAGPOC_MAX_WAITERS": (
        "max_waiters",
        "POST /run-agents?wait= requests one gateway holds at once; more get 503 (0: no cap)",
    ),
    "RAGPOC_RUN_RATE_PER_MINUTE": (
        "run_rate_per_minute",
        "runs one API token may ask for per minute, across gateways; more get 429 with "
        "Retry-After (0: no limit; no limit either without tokens)",
    ),
    "RAGPOC_ALLOW_OPEN": (
        "allow_open",
        "let a gateway bound off loopback run without any API token (anyone who reaches it "
        "can use the API)",
    ),
}


Settings.ENVIRONMENT = ENVIRONMENT


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """The platform's settings from the environment (`Settings.from_env`), with the rules
    across its fields checked (`check_lease_timing`)."""
    settings = Settings.from_env(environ)
    check_lease_timing(settings)
    return settings


def check_lease_timing(settings: Settings) -> None:
    """RAGPOC_CONSUMER_MIN_IDLE_MS >= 1.5 x RAGPOC_LOCK_TTL_MS, or a SettingsError naming both.

    A runner's command is reclaimed by another runner only once it has been idle for min_idle,
    and that must never happen while the first runner can still extend its lease. A working
    runner refreshes its command every min_idle/3 and its lease every ttl/3; if it stalls (or
    dies) at S, its last refresh may be as early as S - min_idle/3, so a reclaim can come at
    S + 2/3 x min_idle, while its lease, last extended at S at the latest, holds until S + ttl.
    Hence 2/3 x min_idle >= ttl. (A runner that takes over never takes a live lease anyway:
    the rule keeps a reclaim from being a wasted delivery, and the run from waiting a while.)
    Checked at load, not on construction: tests build Settings with whatever they need."""
    if settings.consumer_min_idle_ms * 2 < settings.lock_ttl_ms * 3:
        raise SettingsError(
            f"RAGPOC_CONSUMER_MIN_IDLE_MS ({settings.consumer_min_idle_ms}) must be at least "
            f"1.5 x RAGPOC_LOCK_TTL_MS ({settings.lock_ttl_ms}), i.e. "
            f">= {-(-settings.lock_ttl_ms * 3 // 2)}: a command must not be reclaimed from a "
            "runner while that runner can still extend its lock lease"
        )


def describe_environment() -> str:
    """A table of every variable, its default and meaning, for `--help`."""
    return Settings.describe()

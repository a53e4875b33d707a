"""Settings: frozen structs read from the environment once at start-up, one pattern for all.

`EnvSettings` is the pattern: a struct subclass declares its fields (type, default, bounds) and an
`ENVIRONMENT` table (variable -> field, meaning). `from_env()` loads and validates it, failing
with a `SettingsError` that names the variable; `describe()` is its part of `ragpoc --help`.
`Settings` holds what every process reads; a service with knobs of its own (the ingestor's
chunking, mockai's embedding size) owns another `EnvSettings` subclass beside its code.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Self

import msgspec

from libs.common.errors import RagpocError

__all__ = [
    "ENVIRONMENT",
    "EnvSettings",
    "Settings",
    "SettingsError",
    "check_lease_timing",
    "describe_environment",
    "load_settings",
]


class SettingsError(RagpocError, ValueError):
    """A setting in the environment is missing or malformed; the message names the variable."""


class EnvSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every settings struct: `ENVIRONMENT` maps variable -> (field, meaning); the
    field's type, bounds and default are the struct's."""

    ENVIRONMENT: ClassVar[dict[str, tuple[str, str]]] = {}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Build the settings from the environment, failing fast with the variable's name.
        An empty variable counts as unset."""
        env = os.environ if environ is None else environ
        raw = {
            field: value
            for variable, (field, _) in cls.ENVIRONMENT.items()
            if (value := env.get(variable))
        }
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            match = re.search(r"\$\.(\w+)", str(exc))
            field = match.group(1) if match else ""
            variable = next((v for v, (f, _) in cls.ENVIRONMENT.items() if f == field), "")
            if not variable:  # a rule across fields (__post_init__) names its variables itself
                raise SettingsError(str(exc)) from exc
            raise SettingsError(f"environment variable {variable} is invalid: {exc}") from exc

    @classmethod
    def describe(cls) -> str:
        """One line per variable: its name, meaning and default, for `--help`."""
        defaults = cls()
        lines = []
        for variable, (field, meaning) in cls.ENVIRONMENT.items():
            default = getattr(defaults, field)
            shown = f" [default: {default}]" if default not in ("", None) else ""
            lines.append(f"  {variable:<32} {meaning}{shown}")
        return "\n".join(lines)


class Settings(EnvSettings, frozen=True, kw_only=True):
    """What every rag-poc process reads."""

    data_dir: Path = Path(".ragpoc")
    redis_url: str = ""
    database_url: str = ""
    qdrant_url: str = ""
    openai_base_url: str = "http://127.0.0.1:1573/v1"
    openai_api_key: str = "mock-key"
    chat_model: str = "mock-gpt"
    embedding_model: str = "mock-embedding"
    namespace: str = "ragpoc"
    partitions: int = 16
    host: str = "127.0.0.1"
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
    dev: bool = False
    log_level: str = "info"
    log_format: str = "auto"
    consumer_block_ms: int = 1000
    projector_linger_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 10
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
        return self.ingestor_base_url or f"http://{self.host}:{self.ingestor_port}"


# variable name -> (field, meaning). The field's default is in Settings.
ENVIRONMENT: dict[str, tuple[str, str]] = {
    "RAGPOC_DATA_DIR": ("data_dir", "folder for the embedded Valkey, SQLite and Qdrant data"),
    "REDIS_URL": ("redis_url", "Redis/Valkey to use; `ragpoc up` starts Valkey when unset"),
    "DATABASE_URL": ("database_url", "SQL read models; SQLite in the data folder when unset"),
    "QDRANT_URL": ("qdrant_url", "Qdrant server; Qdrant local mode in the data folder when unset"),
    "OPENAI_BASE_URL": ("openai_base_url", "OpenAI-compatible endpoint (mockai by default)"),
    "OPENAI_API_KEY": ("openai_api_key", "API key for that endpoint"),
    "RAGPOC_CHAT_MODEL": ("chat_model", "chat model name"),
    "RAGPOC_EMBEDDING_MODEL": ("embedding_model", "embedding model name"),
    "RAGPOC_NAMESPACE": ("namespace", "prefix of every Redis key and stream"),
    "RAGPOC_PARTITIONS": ("partitions", "number of event-log partitions (fixed per deployment)"),
    "RAGPOC_HOST": ("host", "interface the HTTP services bind to"),
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
    "RAGPOC_DEV": ("dev", "development mode (enables per-request test knobs)"),
    "RAGPOC_LOG_LEVEL": ("log_level", "debug, info, warning or error"),
    "RAGPOC_LOG_FORMAT": ("log_format", "json, console, or auto (console on a terminal)"),
    "RAGPOC_CONSUMER_BLOCK_MS": ("consumer_block_ms", "how long a consumer blocks on XREADGROUP"),
    "RAGPOC_PROJECTOR_LINGER_MS": (
        "projector_linger_ms",
        "after a projector step, wait this long for more events to fold in one transaction",
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


def _decode_path(type_: type, value: object) -> object:
    if type_ is Path and isinstance(value, str):
        return Path(value)
    raise NotImplementedError


def describe_environment() -> str:
    """A table of every variable, its default and meaning, for `--help`."""
    return Settings.describe()

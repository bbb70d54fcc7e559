"""Service settings, read from `BONSAI_*` environment variables and validated at start-up."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_HOME = Path("~/.bonsai")

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Return whether `host` names only this machine (127.0.0.0/8, ::1 or localhost)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _split_paths(value: object) -> object:
    if isinstance(value, str):
        return [part for part in value.split(":") if part]
    return value


class Settings(BaseSettings):
    """Every setting of the API server and the worker; see docs/service.md for the table."""

    model_config = SettingsConfigDict(env_prefix="BONSAI_", extra="ignore", frozen=True)

    home: Path = Field(
        default=DEFAULT_HOME,
        description="Directory of the embedded database, broker files and artifacts.",
    )
    data_dir: Path | None = Field(
        default=None, description="Directory searched for data sets; default `$BONSAI_HOME/data`."
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Further directories a config's `data_dir` may point into, `:`-separated.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default SQLite at `$BONSAI_HOME/bonsai.db`. "
        "Production: `postgresql+psycopg://user:password@host/db`.",
    )
    broker_url: str = Field(
        default="filesystem://",
        description="Celery broker; `filesystem://` keeps messages under `$BONSAI_HOME/broker`. "
        "Production: `redis://host:6379/0`.",
    )
    artifact_url: str | None = Field(
        default=None,
        description="Artifact store: a directory path or `file://` URL, or `s3://bucket/prefix`; "
        "default `$BONSAI_HOME/artifacts`.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible server; credentials come from `AWS_*`.",
    )
    work_dir: Path | None = Field(
        default=None,
        description="Directory of the worker's per-search work directories; "
        "default `$BONSAI_HOME/work`.",
    )
    host: str = Field(default="127.0.0.1", description="Address `serve` binds to.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port `serve` binds to.")
    token: SecretStr | None = Field(
        default=None, description="API token; required for a non-loopback `host`."
    )
    cookie_secure: bool = Field(
        default=False, description="Mark the session cookie Secure (set it behind HTTPS)."
    )
    embedded_worker: bool | None = Field(
        default=None,
        description="Whether `serve` starts and supervises a worker; "
        "default: only with the `filesystem://` broker.",
    )
    queue: str = Field(default="bonsai", min_length=1, description="Celery queue of search tasks.")
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="A running search's lease; it lapses this long after the last heartbeat.",
    )
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, description="Interval of lease heartbeats."
    )
    reaper_interval_seconds: float = Field(
        default=5.0, gt=0, description="Interval at which `serve` looks for lapsed leases."
    )
    max_requeues: int = Field(
        default=3, ge=0, description="Re-enqueues of a search whose lease lapsed before it fails."
    )
    cancel_grace_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time a cancelled search has to stop before its process is killed.",
    )
    flush_interval_seconds: float = Field(
        default=0.25,
        gt=0,
        le=1.0,
        description="Maximum time an event waits in the worker before it is stored.",
    )
    stream_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        le=1.0,
        description="Interval at which an event stream polls the database.",
    )
    max_epochs: int = Field(
        default=600, ge=1, description="Largest `epochs` a search may ask for."
    )
    max_channels: int = Field(default=256, ge=1, description="Largest `channels`.")
    max_nodes: int = Field(default=8, ge=1, description="Largest `nodes`.")
    max_batch_size: int = Field(default=1024, ge=1, description="Largest `batch_size`.")
    max_active_searches: int = Field(
        default=100, ge=1, description="Searches that may be queued or running at once."
    )
    keep_work_dirs: bool = Field(
        default=False, description="Keep a search's work directory after its artifacts are stored."
    )
    search_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads of each search process (OMP_NUM_THREADS); default: PyTorch's "
        "choice, one per core. Set 1 where other processes share the cores.",
    )
    search_function: str = Field(
        default="bonsai.run_search",
        description="Function the worker's child process runs, as `module:name` or `module.name`.",
    )
    log_level: str = Field(default="INFO", description="Level of the service's logs.")

    @model_validator(mode="before")
    @classmethod
    def _split_data_roots(cls, values: object) -> object:
        if isinstance(values, dict) and "data_roots" in values:
            values = {**values, "data_roots": _split_paths(values["data_roots"])}
        return values

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be at most half of "
                f"lease_seconds ({self.lease_seconds}), so one missed heartbeat keeps the lease"
            )
        scheme = self.resolved_database_url.split(":", 1)[0]
        if scheme not in {"sqlite", "postgresql", "postgresql+psycopg"}:
            raise ValueError(
                f"database_url has the unsupported scheme {scheme!r}; "
                "use sqlite:///path or postgresql+psycopg://..."
            )
        broker = self.broker_url.split(":", 1)[0]
        if broker not in {"filesystem", "redis", "rediss", "amqp", "pyamqp"}:
            raise ValueError(
                f"broker_url has the unsupported scheme {broker!r}; use filesystem:// or redis://..."
            )
        artifacts = self.resolved_artifact_url
        if "://" in artifacts and not artifacts.startswith(("file://", "s3://")):
            raise ValueError(
                f"artifact_url {artifacts!r} is neither a directory, file:// nor s3:// URL"
            )
        return self

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_data_dir(self) -> Path:
        return (self.data_dir or self.resolved_home / "data").expanduser().resolve()

    @property
    def allowed_data_roots(self) -> list[Path]:
        return [self.resolved_data_dir, *(p.expanduser().resolve() for p in self.data_roots)]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home / 'bonsai.db'}"

    @property
    def resolved_artifact_url(self) -> str:
        return self.artifact_url or str(self.resolved_home / "artifacts")

    @property
    def resolved_work_dir(self) -> Path:
        return (self.work_dir or self.resolved_home / "work").expanduser().resolve()

    @property
    def broker_dir(self) -> Path:
        return self.resolved_home / "broker"

    @property
    def uses_filesystem_broker(self) -> bool:
        return self.broker_url.startswith("filesystem:")

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker is None:
            return self.uses_filesystem_broker
        return self.embedded_worker

    def check_bind(self, host: str) -> None:
        """Raise ValueError when `host` is reachable from other machines but no token is set."""
        if not is_loopback(host) and self.token is None:
            raise ValueError(
                f"binding to {host!r} exposes the API to other machines; "
                "set BONSAI_TOKEN or bind to 127.0.0.1"
            )


@lru_cache
def get_settings() -> Settings:
    """Return the process's settings, read once from the environment."""
    return Settings()

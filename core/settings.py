"""The one typed configuration of labtrain: every `LABTRAIN_` variable, read nowhere else."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABTRAIN_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data_dir: Path = Path("./var")
    database_url: str | None = None  # default: SQLite file labtrain.db in data_dir
    redis_url: str | None = None  # unset: `labtrain up` starts an embedded Redis under data_dir
    api_keys: SecretStr | None = None  # "owner:key,owner2:key2"
    device: Literal["auto", "cpu", "cuda"] = "auto"

    # Limits (each refused with a clear 4xx when exceeded).
    max_params: int = Field(5_000_000, ge=1)
    max_epochs: int = Field(100_000, ge=1)
    max_run_seconds: int = Field(6 * 3600, ge=1, description="a run longer than this ends as failed")
    max_prediction_rows: int = Field(10_000, ge=1)
    max_sweep_size: int = Field(500, ge=1, description="experiments in one sweep (rows × repeats)")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="a larger request body gets 413 (uploads: max_upload_bytes)"
    )
    max_total_work: int = Field(
        10**12, ge=1, description="epochs × training samples × parameters of one experiment (the studies need 9.1e9)"
    )
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="the file of one dataset upload")
    max_queued_per_owner: int = Field(1000, ge=1, description="experiments one owner may have queued at once")
    max_upload_columns: int = Field(10_000, ge=2, description="columns of one CSV upload (checked from the header)")
    max_upload_cells: int = Field(
        50_000_000, ge=1, description="rows × columns of one CSV upload (checked before the body is parsed)"
    )
    max_upload_inflated_bytes: int = Field(
        1 << 30, ge=1 << 20, description="the arrays of one NPZ upload once decompressed (read from their headers)"
    )
    upload_parse_concurrency: int = Field(
        2, ge=1, description="uploads parsed at once by one API process (outside the database-session slots)"
    )
    max_prediction_memory_bytes: int = Field(
        256 * 1024 * 1024, ge=1 << 20, description="activations of one prediction request (computed in chunks)"
    )
    max_run_memory_bytes: int = Field(
        8 << 30,
        ge=1 << 20,
        description="estimated training memory of one run: parameters, optimizer state, activations, data",
    )
    max_attempts: int = Field(
        3, ge=1, description="a run whose worker process dies this many times ends failed instead of redelivered"
    )

    # Worker behaviour.
    checkpoint_seconds: float = Field(30.0, ge=0.0, description="checkpoint at most this often")
    worker_concurrency: int = Field(1, ge=1)
    torch_threads: int = Field(0, ge=0, description="0: chosen from the model size")
    heartbeat_stale_seconds: float = Field(
        300.0, gt=0.0, description="a running experiment silent this long may be taken over by another delivery"
    )
    reconcile_seconds: float = Field(
        30.0, gt=0.0, description="how often the workers look for accepted work whose message was lost"
    )
    db_retry_seconds: float = Field(
        60.0, ge=0.0, description="how long a worker retries an unreachable database before the run fails"
    )

    # Artifacts (trained models and checkpoints): in the database unless a directory is set and
    # the blob is larger than the inline limit. Every API and worker host must see the directory.
    artifact_dir: Path | None = Field(None, description="unset: every artifact is stored in the database")
    artifact_inline_max_bytes: int = Field(
        4 * 1024 * 1024, ge=0, description="with artifact_dir set, larger artifacts are written there as files"
    )

    # Group training: a sweep's compatible members train together as one stacked network.
    group_max_members: int = Field(32, ge=1, description="1 turns group training off")
    group_memory_bytes: int = Field(1 << 30, ge=1 << 20, description="estimated memory budget of one group")

    # Webhooks (core/webhooks.py): the API and every worker need the same values.
    webhook_allow: str = Field(
        "", description="host patterns a `notify.url` may name: `127.0.0.1:*,hooks.example.org,*.lab.org:8443`"
    )
    webhook_secret: SecretStr | None = Field(
        None, description="unset: each owner's signing secret is random, stored in the database"
    )
    webhook_max_attempts: int = Field(5, ge=1, le=50, description="tries of one event before it is given up")
    webhook_backoff_seconds: float = Field(2.0, ge=0.0, description="wait before the 2nd try; doubled each try")
    webhook_timeout_seconds: float = Field(10.0, gt=0.0, description="of one POST")

    # API behaviour.
    model_cache_size: int = Field(32, ge=1)
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field("text", description="json: one JSON object per log line")

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("artifact_dir", mode="before")
    @classmethod
    def _absolute_or_unset(cls, v: object) -> Path | None:
        if v is None or not str(v).strip():  # LABTRAIN_ARTIFACT_DIR= (empty) means unset
            return None
        return Path(str(v)).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'labtrain.db'}"

    @property
    def embedded_redis_socket(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def resolved_redis_url(self) -> str:
        """The broker URL: LABTRAIN_REDIS_URL, else the embedded Redis's socket under data_dir."""
        if self.redis_url:
            return self.redis_url
        return f"redis+socket://{self.embedded_redis_socket}"

    def api_key_owners(self) -> dict[str, str]:
        """key → owner, from `owner:key,owner2:key2`; empty when auth is off."""
        if self.api_keys is None or not self.api_keys.get_secret_value().strip():
            return {}
        owners: dict[str, str] = {}
        for item in self.api_keys.get_secret_value().split(","):
            owner, sep, key = item.strip().partition(":")
            if not sep or not owner or not key:
                raise ValueError("LABTRAIN_API_KEYS must look like owner:key,owner2:key2")
            owners[key] = owner
        return owners


@lru_cache
def get_settings() -> Settings:
    return Settings()

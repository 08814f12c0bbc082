"""Settings (contract.md §7): one pydantic-settings class, read from OLIGOCDS_* environment variables.

Nothing is built at import time: call get_settings() (cached) or construct Settings(...) in tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OLIGOCDS_", extra="ignore")

    env: Literal["development", "production"] = "production"
    host: str = "127.0.0.1"
    port: int = 8080
    store_url: str = "sqlite:///./oligocds.db"
    rules_dir: Path | None = None
    kafka_bootstrap: str | None = None
    kafka_input_topic: str = "fhir.bundles"
    kafka_output_topic: str = "oligocds.results"
    kafka_dlq_topic: str = "fhir.bundles.dlq"
    kafka_group_id: str = "oligocds"  # consumer group; also the prefix of the transactional ids
    kafka_max_records: int = Field(2000, ge=1)  # per fetch; results are coalesced per patient within a batch
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    fhir_writeback_url: str | None = None
    cds_trusted_issuers: str | None = None
    max_body_bytes: int = 5 * 1024 * 1024
    canonical_base: str = "http://oligocds.org/fhir"
    public_base_url: str | None = None
    cors_origins: str | None = None
    fhir_timeout_ms: int = 400
    cds_idempotency_seconds: float = Field(300.0, ge=0)  # hookInstance + body → the same response; 0 = off
    cds_idempotency_max_mb: float = Field(64.0, gt=0)  # memory for those responses (JSON bytes)
    # stored patient state (POST /ingest, Kafka) this recent stands in for absent prefetch keys; 0 = never used
    cds_stored_state_max_age_s: float = Field(86400.0, ge=0)
    rules_reload_seconds: float = Field(5.0, ge=0)  # 0 turns the rule-file watcher off
    log_level: str = "INFO"

    # Clinical [CONFIG] values of clinical-rules.md §8; the rule files read them as {setting: name}.
    controlled_primary_days: int = Field(90, ge=0)
    stale_ps_days: int = Field(90, ge=0)
    stale_renal_days: int = Field(30, ge=0)
    pathfx_probability: float = Field(0.5, ge=0, le=1)
    systemic_includes_endocrine: bool = True
    systemic_lookback_days: int = Field(90, ge=0)
    adt_lookback_months: int = Field(6, ge=0)  # ORIOLE "no ADT within 6 months": calendar months, like §2.4
    dental_exam_months: int = Field(6, ge=0)  # BMA-05: a dental examination this recent counts
    trial_pattern_activity: bool = False
    surgtech_long_months: float = Field(12, ge=0)
    surgtech_short_months: float = Field(3, ge=0)

    def rule_settings(self) -> dict[str, bool | int | float | str]:
        """The settings that rule files may reference."""
        return {
            "controlled_primary_days": self.controlled_primary_days,
            "pathfx_probability": self.pathfx_probability,
            "trial_pattern_activity": self.trial_pattern_activity,
            "surgtech_long_months": self.surgtech_long_months,
            "surgtech_short_months": self.surgtech_short_months,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

"""One settings object: defaults < missive.toml < MISSIVE_* environment (< command-line flags).

Nested values come from the environment with `__` between the parts, e.g. `MISSIVE_LOCAL__THREADS=2`;
lists (such as `models`) as JSON. The config file is `missive.toml` in the working directory, or the
path in `MISSIVE_CONFIG` / `--config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"


class ModelSettings(BaseModel):
    """A model served by the embedded llama.cpp engine."""

    id: str
    display_name: str | None = None
    path: str | None = Field(default=None, description="GGUF file; empty for the embedded default model")
    context_window: int = Field(default=8192, ge=16, description="Tokens of context per sequence")
    max_output_tokens: int = Field(
        default=64000,
        ge=1,
        description="Largest max_tokens accepted. Generous on purpose: clients such as Claude Code send 32000; "
        "a generation that reaches the end of the context stops with model_context_window_exceeded.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other model ids that resolve to this model")
    min_cache_tokens: int = Field(
        default=1024, ge=1, description="Shortest prefix that cache_control caches; shorter ones are silently not"
    )


class LocalEngineSettings(BaseModel):
    """The embedded llama.cpp engine. Each model gets `parallel` sequences of its own context window."""

    threads: int = Field(default=0, ge=0, description="CPU threads for llama.cpp; 0 = all cores")
    parallel: int = Field(default=4, ge=1, le=64, description="Sequences decoded together in each forward pass")
    prefill_chunk: int = Field(
        default=256, ge=16, description="Prompt tokens evaluated per step, so long prompts do not stall streams"
    )
    flash_attention: bool = True
    max_queue: int = Field(default=32, ge=0, description="Requests waiting for a sequence; beyond it, 529")
    max_queue_wait: float = Field(default=60.0, gt=0, description="Seconds a request may wait; then 529")
    prompt_cache_mib: int = Field(
        default=1024, ge=0, description="Host memory for cache_control prefixes (KV state), evicted LRU"
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MISSIVE_", env_nested_delimiter="__", extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "missive")
    log_level: str = "info"
    models: list[ModelSettings] = Field(
        default_factory=lambda: [ModelSettings(id=DEFAULT_MODEL_ID, display_name="SmolLM2 135M Instruct")]
    )
    default_model: str = DEFAULT_MODEL_ID
    claude_aliases: bool = Field(
        default=True, description="Resolve every claude-* model id to the default model (the response echoes it)"
    )
    local: LocalEngineSettings = Field(default_factory=LocalEngineSettings)
    max_request_bytes: int = 32 * 1024 * 1024
    ping_interval: float = Field(default=10.0, gt=0, description="Seconds between keep-alive pings in a stream")
    extra_betas: list[str] = Field(default_factory=list, description="anthropic-beta values to accept beyond ours")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("MISSIVE_CONFIG", "missive.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    @property
    def database_path(self) -> Path:
        return self.data_dir / "missive.db"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the file and the environment, with explicit overrides (e.g. CLI flags) on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})

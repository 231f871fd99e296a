"""One settings object: defaults < missive.toml < MISSIVE_* environment (< command-line flags).

Nested values come from the environment with `__` between the parts, e.g. `MISSIVE_LOCAL__THREADS=2`;
lists (such as `models`) as JSON. The config file is `missive.toml` in the working directory, or the
path in `MISSIVE_CONFIG` / `--config`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
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
    temperature: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Sampling temperature of requests that set none (the Claude API's default is 1). API version "
        "2026-10-21 takes no sampling parameters, so this is how an operator makes a small model steadier",
    )
    reasoning: bool | None = Field(
        default=None,
        description="The model thinks in <think>...</think> before answering: its thinking becomes thinking blocks. "
        "Unset: read from the chat template (it shows <think>); true or false overrides that",
    )
    min_cache_tokens: int = Field(
        default=1024, ge=1, description="Shortest prefix that cache_control caches; shorter ones are silently not"
    )
    chat_template_file: str | None = Field(
        default=None, description="A Jinja chat template file to use instead of the one inside the GGUF"
    )
    mmproj: str | None = Field(
        default=None,
        description="A multimodal projector GGUF (as llama-server's --mmproj): the model then takes image blocks, "
        "read through libmtmd (docs/vision.md)",
    )
    tool_format: Literal[
        "auto", "missive", "hermes", "qwen3_coder", "glm45", "llama3_json", "mistral_v3", "mistral_v11", "harmony"
    ] = Field(
        default="auto",
        description="How tools reach the model. hermes: the chat template takes tools and the model writes "
        '<tool_call>{"name": ..., "arguments": ...}</tool_call> (Qwen 2.5/3, Hermes); qwen3_coder: '
        "<tool_call><function=NAME><parameter=KEY>value</parameter></function></tool_call> (Qwen3-Coder, "
        "Qwen3.5); glm45: <tool_call>NAME<arg_key>KEY</arg_key><arg_value>value</arg_value></tool_call> "
        '(GLM-4.5 and later); llama3_json: {"name": ..., "parameters": ...}, one call a turn (Llama 3.1-3.3); '
        'mistral_v3: [TOOL_CALLS] [{"name": ..., "arguments": ...}] (Mistral 7B v0.3, Nemo, Small 3.1); mistral_v11: '
        "[TOOL_CALLS]NAME[ARGS]{...} (Mistral Small 3.2, Magistral, Devstral); harmony: gpt-oss's channels, "
        "calls to functions.NAME and reasoning in the analysis channel; "
        "missive: a tool prompt of Missive's own, for templates without tools; auto: read from the chat "
        "template (docs/compatibility.md)",
    )


class LocalEngineSettings(BaseModel):
    """The embedded llama.cpp engine. Each model gets `parallel` sequences of its own context window."""

    isolate: bool = Field(
        default=True,
        description="Run the engine in a process of its own: a native crash restarts the engine, not Missive",
    )
    threads: int = Field(default=0, ge=0, description="CPU threads for llama.cpp; 0 = all cores")
    parallel: int = Field(default=4, ge=1, le=64, description="Sequences decoded together in each forward pass")
    prefill_chunk: int = Field(
        default=256,
        ge=16,
        description="Prompt tokens evaluated per step (chunks of at most this size), so long prompts do not stall streams",
    )
    flash_attention: bool = True
    kv_cache_type: Literal["f16", "q8_0"] = Field(
        default="f16",
        description="Type of the KV cache. q8_0 halves its memory and its reads at long context, and makes a token's "
        "numbers the same decoded alone, beside other sequences or in a speculative pass (docs/engine.md)",
    )
    speculative: bool = Field(
        default=False,
        description="Prompt-lookup speculative decoding for greedy requests: guess the next tokens from an earlier "
        "occurrence of the last `speculative_ngram` tokens and verify them in one pass. Exact (same tokens) only "
        "where the pass computes what a plain step would: see docs/engine.md",
    )
    speculative_ngram: int = Field(default=3, ge=1, le=16, description="Tokens that must match to guess from them")
    speculative_max_draft: int = Field(default=8, ge=1, le=32, description="Most tokens guessed at once")
    speculative_max_sequences: int = Field(
        default=1, ge=1, le=64,
        description="Guess only in steps that decode at most this many sequences: beside other sequences the guesses "
        "take a forward pass of their own, which costs more than they save on a CPU",
    )
    unified_kv: bool = Field(
        default=False,
        description="One KV buffer for all sequences (llama.cpp's kv_unified). Not faster on CPU in our measurements "
        "(docs/engine.md), and a sequence's numbers then depend on what else runs, so greedy output under load "
        "may differ from the same request alone",
    )
    max_queue: int = Field(default=32, ge=0, description="Requests waiting for a sequence; beyond it, 529")
    max_queue_wait: float = Field(default=60.0, gt=0, description="Seconds a request may wait; then 529")
    prompt_cache_mib: int = Field(
        default=1024, ge=0, description="Host memory for cache_control prefixes (KV state), evicted LRU"
    )


class RemoteModelSettings(BaseModel):
    """A model that a remote engine serves, under the id Missive exposes."""

    id: str = Field(description="The model id clients send (and /v1/models lists)")
    upstream: str | None = Field(default=None, description="The model's name at the upstream; default: id")
    display_name: str | None = None
    context_window: int = Field(default=200_000, ge=16)
    max_output_tokens: int = Field(default=64_000, ge=1)
    aliases: list[str] = Field(default_factory=list, description="Other model ids that resolve to this model")
    image_input: bool = False
    pdf_input: bool = Field(
        default=False,
        description="The upstream reads PDFs itself (sent as chat-completions file parts); off: Missive sends the "
        "text of each page (docs/documents.md)",
    )
    tools: bool = True
    thinking: bool = False
    structured_outputs: bool = True


class EngineSettings(BaseModel):
    """A remote engine: an OpenAI-compatible server (vLLM, SGLang, llama-server, Ollama, LM Studio), or an
    Anthropic-compatible one (the Claude API, another Missive, any /v1/messages server)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="Names the engine in routes, the ledger, metrics")
    kind: Literal["openai", "anthropic"]
    url: str = Field(description="Base URL, e.g. http://gpu-1:8000 (a trailing /v1 is optional)")
    api_key_env: str | None = Field(
        default=None, description="Environment variable that holds the upstream's key (the key is never logged)"
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to connect")
    first_token_timeout: float = Field(
        default=60.0, gt=0, description="Seconds until the upstream's first event; past it, fall back"
    )
    read_timeout: float = Field(default=300.0, gt=0, description="Seconds of silence allowed mid-stream")
    max_concurrency: int = Field(default=0, ge=0, description="Requests in flight at once; 0: no cap")
    models: list[RemoteModelSettings] = Field(default_factory=list, description="What to expose from it")


class RouteSettings(BaseModel):
    """A model id served by an ordered list of models: the first healthy one serves, the others are its
    fallbacks (only before the response's first byte)."""

    model: str = Field(description="The model id clients send")
    to: list[str] = Field(min_length=1, description="Model ids (of any engine), in order of preference")


class BreakerSettings(BaseModel):
    """When an engine is taken out of rotation, and when it is probed again."""

    failures: int = Field(default=3, ge=1, description="Failures in a row (before a first event) that open it")
    cool_down: float = Field(default=30.0, gt=0, description="Seconds out of rotation before one probe request")


class RateLimits(BaseModel):
    """Per-minute limits of one tier; 0 means no limit (and no headers for that dimension)."""

    requests_per_minute: int = Field(default=0, ge=0)
    input_tokens_per_minute: int = Field(default=0, ge=0, description="Input plus cache writes; cache reads are free")
    output_tokens_per_minute: int = Field(default=0, ge=0)


class TierSettings(RateLimits):
    """A named rate-limit tier: default limits per model, overrides for some models, count_tokens' own RPM."""

    count_tokens_requests_per_minute: int = Field(default=0, ge=0)
    models: dict[str, RateLimits] = Field(default_factory=dict, description="Per-model overrides, by model id")


def _default_tiers() -> dict[str, TierSettings]:
    def tier(rpm: int, itpm: int, otpm: int) -> TierSettings:
        return TierSettings(
            requests_per_minute=rpm,
            input_tokens_per_minute=itpm,
            output_tokens_per_minute=otpm,
            count_tokens_requests_per_minute=rpm,
        )

    return {  # the Claude API's standard tiers for Sonnet (spec §9); "default" is tier 4
        "tier-1": tier(50, 30_000, 8_000),
        "tier-2": tier(1_000, 450_000, 90_000),
        "tier-3": tier(2_000, 800_000, 160_000),
        "tier-4": tier(4_000, 2_000_000, 400_000),
        "default": tier(4_000, 2_000_000, 400_000),
        "unlimited": TierSettings(),
    }


class RateLimitSettings(BaseModel):
    backend: str = Field(default="memory", pattern="^(memory|redis)$", description="memory: one process; redis: shared")
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = Field(default="missive:rl:", description="Key prefix for the buckets in Redis")
    default_tier: str = "default"
    tiers: dict[str, TierSettings] = Field(
        default_factory=_default_tiers, description="Named tiers; those given are added to (or replace) the defaults"
    )

    @field_validator("tiers")
    @classmethod
    def _keep_default_tiers(cls, tiers: dict[str, TierSettings]) -> dict[str, TierSettings]:
        return {**_default_tiers(), **tiers}

    @model_validator(mode="after")
    def _default_tier_exists(self) -> RateLimitSettings:
        if self.default_tier not in self.tiers:
            raise ValueError(f"rate_limits.default_tier {self.default_tier!r} is not a configured tier")
        return self


class ModelPrice(BaseModel):
    """USD per million tokens. Cache prices default to the input price times the spec's multipliers."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float | None = Field(default=None, ge=0, description="Default: input x 1.25")
    cache_write_1h: float | None = Field(default=None, ge=0, description="Default: input x 2")
    cache_read: float | None = Field(default=None, ge=0, description="Default: input x 0.1")


def _default_prices() -> dict[str, ModelPrice]:
    table = {  # spec §15, for upstream use; a local model not listed here is free
        "claude-fable-5": (10, 50), "claude-mythos-5": (10, 50), "claude-opus-5": (5, 25),
        "claude-sonnet-5": (2, 10), "claude-opus-4-8": (5, 25), "claude-opus-4-7": (5, 25),
        "claude-opus-4-6": (5, 25), "claude-opus-4-5": (5, 25), "claude-sonnet-4-6": (3, 15),
        "claude-sonnet-4-5": (3, 15), "claude-sonnet-4": (3, 15), "claude-haiku-4-5": (1, 5),
        "claude-opus-4-1": (15, 75), "claude-opus-4": (15, 75), "claude-3-5-haiku": (0.8, 4),
    }  # fmt: skip
    return {model: ModelPrice(input=price[0], output=price[1]) for model, price in table.items()}


class PricingSettings(BaseModel):
    models: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        description="By model id, added to the defaults; \"engine/model\" prices a model as one engine serves it; a "
        "dated id (claude-haiku-4-5-20251001) falls back to its longest listed prefix; a model not listed is free",
    )

    @field_validator("models")
    @classmethod
    def _keep_default_prices(cls, models: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        return {**_default_prices(), **models}
    batch_discount: float = Field(default=0.5, ge=0, le=1, description="Fraction taken off batch requests")


class LedgerSettings(BaseModel):
    checkpoint_interval: float = Field(
        default=2.0, gt=0, description="Seconds between saves of the progress of requests in flight"
    )
    checkpoint_tokens: int = Field(
        default=16, ge=1, description="Save a request's progress sooner, once it is this many output tokens ahead"
    )
    checkpoint_spacing: float = Field(
        default=0.25, ge=0, description="Least seconds between two saves (one write covers every request in flight)"
    )
    dead_after: float = Field(
        default=10.0, gt=0, description="A front end silent this long is dead: its requests in flight are settled"
    )
    synchronous_commit: bool = Field(
        default=False,
        description="PostgreSQL: wait for the WAL flush on ledger commits. Off, a record survives a crash of "
        "Missive but not of the database host (the same durability as SQLite's WAL mode here)",
    )


class BatchSettings(BaseModel):
    """Message batches: run by every front end in the capacity that interactive requests leave."""

    concurrency: int | None = Field(
        default=None,
        ge=0,
        description="Batch requests this front end runs at once; empty: the embedded engine's `parallel`. "
        "0: it runs none (it still answers the batch endpoints and keeps batches' upkeep)",
    )
    expires_after: float = Field(default=86400.0, gt=0, description="Seconds after creation that a batch expires")
    retention: float = Field(
        default=29 * 86400.0, gt=0, description="Seconds after creation that a batch's results are kept"
    )
    max_requests: int = Field(default=100_000, ge=1, description="Requests in one batch at most")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1, description="Largest batch create body")
    max_attempts: int = Field(
        default=5, ge=1, description="Tries of a request refused as retryable (429, 529, 5xx); then it is errored"
    )
    poll_interval: float = Field(default=1.0, gt=0, description="Seconds between looks for queued work when idle")
    progress_interval: float = Field(default=10.0, gt=0, description="Seconds between progress lines in the log")


class ConsoleSettings(BaseModel):
    """The web console at /console (docs/console.md): sign-in with an admin key, then a session."""

    enabled: bool = Field(default=True, description="Serve the console at /console")
    session_ttl: float = Field(default=12 * 3600.0, gt=0, description="Seconds a console session lasts")
    secure_cookie: bool = Field(
        default=False, description="Mark the session cookie Secure (always so when the request came over HTTPS)"
    )
    assets_dir: str | None = Field(
        default=None,
        description="Where the console's npm assets were installed; empty: .cache/console/node_modules of the "
        "checkout (scripts/bootstrap installs them there)",
    )


class MediaSettings(BaseModel):
    """Images and documents in requests: `url` sources fetched by Missive, and PDFs (docs/documents.md)."""

    allow_private_urls: bool = Field(
        default=False,
        description="Fetch url sources that resolve to private, loopback, link-local or other non-public addresses. "
        "Off: such a URL is a 400, so that a client cannot reach the server's own network through it",
    )
    url_allow: list[str] = Field(
        default_factory=list,
        description="Hosts (docs.internal) and networks (10.1.0.0/16) that url sources may reach even though they "
        "are not public",
    )
    fetch_timeout: float = Field(default=15.0, gt=0, description="Seconds for one url source, redirects included")
    max_redirects: int = Field(default=5, ge=0, description="Redirects followed for one url source")
    max_url_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, description="Largest body a url source may have (the API's 32 MB)"
    )
    max_pdf_pages: int = Field(default=100, ge=1, description="PDF pages in one request at most (the API's 100)")
    pdf_pages_as_images: bool = Field(
        default=False,
        description="For models that take images: each PDF page is also given as a picture of the page, after its "
        "text, as the Claude API does. Off: the text of each page only",
    )


class FileSettings(BaseModel):
    """The Files API: uploads kept per workspace, their metadata in the store, their bytes on disk."""

    dir: Path | None = Field(default=None, description="Where the files' bytes are kept; empty: data_dir/files")
    max_bytes: int = Field(default=500 * 1024 * 1024, ge=1, description="Largest upload (the Claude API's 500 MB)")
    downloadable: bool = Field(
        default=False,
        description="Uploaded files can be downloaded again (GET /v1/files/{id}/content). Off by default, as on "
        "the Claude API, where only files that the server creates are downloadable (docs/files.md)",
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
    engines: list[EngineSettings] = Field(default_factory=list, description="Remote engines ([[engines]])")
    routes: list[RouteSettings] = Field(default_factory=list, description="Model ids with fallbacks ([[routes]])")
    circuit_breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    max_request_bytes: int = 32 * 1024 * 1024
    public_url: str | None = Field(
        default=None,
        description="The server's address as clients reach it (https://missive.example.com), for the URLs it "
        "hands out (a batch's results_url). Empty: those URLs are paths, which the SDKs join to their base URL "
        "(the Host a request arrived with is not used: a reverse proxy may have rewritten it)",
    )
    ping_interval: float = Field(default=10.0, gt=0, description="Seconds between keep-alive pings in a stream")
    strict_betas: bool = Field(
        default=False,
        description="Refuse anthropic-beta values this server does not know (the Claude API's 400). Off by default: "
        "every client release adds betas, and an unknown one is accepted, ignored and logged once",
    )
    extra_betas: list[str] = Field(
        default_factory=list, description="anthropic-beta values to count as known (matters with strict_betas)"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; empty for SQLite in data_dir. PostgreSQL: postgresql+psycopg://user@host/db",
    )
    organization_name: str = "Missive"
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    pricing: PricingSettings = Field(default_factory=PricingSettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

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

    @property
    def files_dir(self) -> Path:
        return self.files.dir or self.data_dir / "files"

    @property
    def database(self) -> str:
        """The database URL in effect: `database_url`, or SQLite in the data directory."""
        return self.database_url or f"sqlite:///{self.database_path}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the file and the environment, with explicit overrides (e.g. CLI flags) on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})

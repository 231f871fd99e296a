"""Prometheus metrics, served at /metrics. Every metric Missive exports is defined here.

Two registries: the embedded engine's (`ENGINE_REGISTRY`, kept by the engine process when it runs in
one) and the API's (`REGISTRY`: requests per engine, fallbacks). /metrics serves both.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
ENGINE_REGISTRY = CollectorRegistry(auto_describe=True)
_MODEL = ["model"]

QUEUE_DEPTH = Gauge("missive_queue_depth", "Requests waiting for a sequence slot", _MODEL, registry=ENGINE_REGISTRY)
ACTIVE_SEQUENCES = Gauge("missive_active_sequences", "Sequences being prefilled or decoded", _MODEL, registry=ENGINE_REGISTRY)
KV_TOKENS = Gauge("missive_kv_cache_tokens", "Tokens resident in the KV cache (all slots)", _MODEL, registry=ENGINE_REGISTRY)
PROMPT_CACHE_BYTES = Gauge(
    "missive_prompt_cache_bytes", "Host memory held by cached prompt prefixes", _MODEL, registry=ENGINE_REGISTRY
)
PREFIX_TOKENS_REUSED = Counter(
    "missive_prefix_tokens_reused", "Prompt tokens whose prefill was skipped (any reuse)", _MODEL, registry=ENGINE_REGISTRY
)
CACHE_READ_TOKENS = Counter(
    "missive_prompt_cache_read_tokens", "Tokens read from cache_control prefixes (hits)", _MODEL, registry=ENGINE_REGISTRY
)
CACHE_WRITE_TOKENS = Counter(
    "missive_prompt_cache_write_tokens", "Tokens written to cache_control prefixes", _MODEL, registry=ENGINE_REGISTRY
)
OUTPUT_TOKENS = Counter("missive_output_tokens", "Tokens generated", _MODEL, registry=ENGINE_REGISTRY)
PREEMPTIONS = Counter(
    "missive_engine_preemptions",
    "Background (batch) sequences parked to give their slot to an interactive request",
    _MODEL,
    registry=ENGINE_REGISTRY,
)
BACKGROUND_WAITING = Gauge(
    "missive_background_waiting",
    "Background (batch) requests waiting for idle capacity: not yet started, or parked",
    _MODEL,
    registry=ENGINE_REGISTRY,
)
SPECULATIVE_DRAFTED = Counter(
    "missive_speculative_draft_tokens", "Tokens guessed by prompt lookup and verified", _MODEL, registry=ENGINE_REGISTRY
)
SPECULATIVE_ACCEPTED = Counter(
    "missive_speculative_accepted_tokens",
    "Guessed tokens that the model confirmed (acceptance rate: this over missive_speculative_draft_tokens)",
    _MODEL,
    registry=ENGINE_REGISTRY,
)
SPECULATIVE_ACCEPTANCE = Gauge(
    "missive_speculative_acceptance_rate",
    "Share of the guessed tokens that the model confirmed, since the engine started",
    _MODEL,
    registry=ENGINE_REGISTRY,
)
OVERLOADED = Counter("missive_overloaded", "Requests shed with 529 (queue full or waited too long)", _MODEL, registry=ENGINE_REGISTRY)
TIME_TO_FIRST_TOKEN = Histogram(
    "missive_time_to_first_token_seconds",
    "From submission to the first sampled token",
    _MODEL,
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=ENGINE_REGISTRY,
)
DECODE_TOKENS_PER_SECOND = Histogram(
    "missive_decode_tokens_per_second",
    "Per-request decode speed after the first token",
    _MODEL,
    buckets=(5, 10, 20, 40, 60, 80, 100, 150, 200, 300),
    registry=ENGINE_REGISTRY,
)

_ENGINE = ["engine"]
ENGINE_REQUESTS = Counter(
    "missive_engine_requests",
    "Requests an engine served, by how they ended (succeeded, failed, cancelled), or could not take (unavailable)",
    ["engine", "outcome"],
    registry=REGISTRY,
)
ENGINE_FIRST_EVENT_SECONDS = Histogram(
    "missive_engine_first_event_seconds",
    "From asking an engine to its first event (slot taken, or upstream answered)",
    _ENGINE,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "missive_fallbacks", "Requests passed from this engine to the next target of their route", _ENGINE, registry=REGISTRY
)
BATCH_REQUESTS = Gauge(
    "missive_batch_requests",
    "Requests of the message batches not yet ended, by state: queued, running (on any front end), done",
    ["state"],
    registry=REGISTRY,
)
BATCH_RESULTS = Counter(
    "missive_batch_results", "Batch requests this front end finished, by result type", ["result"], registry=REGISTRY
)
FILES_UPLOADED = Counter("missive_files_uploaded", "Files stored through the Files API by this front end", registry=REGISTRY)
FILE_BYTES_UPLOADED = Counter("missive_file_bytes_uploaded", "Bytes of the files this front end stored", registry=REGISTRY)
FILES_DELETED = Counter("missive_files_deleted", "Files this front end removed (deleted or expired)", registry=REGISTRY)

"""The engines that settings describe: the embedded one over `models`, and each of `[[engines]]`."""

from __future__ import annotations

from missive.engines.base import Engine
from missive.settings import EngineSettings, Settings


def remote_engine(config: EngineSettings) -> Engine:
    if config.kind == "openai":
        from missive.engines.openai.engine import OpenAIEngine

        return OpenAIEngine(config)
    from missive.engines.anthropic.engine import AnthropicEngine

    return AnthropicEngine(config)


def build_engines(settings: Settings) -> list[Engine]:
    from missive.engines.local.engine import LocalEngine  # loads llama.cpp

    engines: list[Engine] = [LocalEngine(settings.models, settings.local)] if settings.models else []
    return engines + [remote_engine(config) for config in settings.engines]

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


def local_engine(settings: Settings) -> Engine:
    if settings.local.isolate:
        from missive.engines.local.process import ProcessEngine

        return ProcessEngine(settings.models, settings.local, settings.log_level)
    from missive.engines.local.engine import LocalEngine  # loads llama.cpp into this process

    return LocalEngine(settings.models, settings.local)


def build_engines(settings: Settings) -> list[Engine]:
    engines = [local_engine(settings)] if settings.models else []
    return engines + [remote_engine(config) for config in settings.engines]

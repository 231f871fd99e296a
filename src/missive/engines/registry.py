"""Model ids and aliases -> the engine and model card that serve them."""

from __future__ import annotations

from dataclasses import dataclass

from missive.engines.base import Engine, ModelCard
from missive.wire.errors import not_found

CLAUDE_PREFIX = "claude-"


def _claude_like(model_id: str) -> bool:
    lowered = model_id.lower()
    return "claude" in lowered or "anthropic" in lowered


@dataclass(frozen=True)
class Resolved:
    engine: Engine
    card: ModelCard


class Registry:
    """Resolves a requested model id: exact ids first, then aliases, then `claude-*` if enabled
    (`claude-<id>` is the model `<id>`; any other `claude-*` id is the default model)."""

    def __init__(self, engines: list[Engine], aliases: dict[str, str], default_model: str, claude_aliases: bool):
        self._models: dict[str, Resolved] = {}
        for engine in engines:
            for card in engine.models():
                self._models[card.id] = Resolved(engine, card)
        for alias, target in aliases.items():
            if target not in self._models:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
        if claude_aliases and default_model not in self._models:
            raise ValueError(f"default_model {default_model!r} is not a configured model")
        self._aliases = dict(aliases)
        self._default = default_model
        self._claude_aliases = claude_aliases

    def resolve(self, model_id: str) -> Resolved:
        if model_id in self._models:
            return self._models[model_id]
        if model_id in self._aliases:
            return self._models[self._aliases[model_id]]
        if self._claude_aliases and model_id.startswith(CLAUDE_PREFIX):
            return self._models.get(model_id.removeprefix(CLAUDE_PREFIX)) or self._models[self._default]
        raise not_found(f"model: {model_id}")

    def listing(self) -> list[tuple[str, ModelCard]]:
        """What `GET /v1/models` lists: every model under its id, then under the Claude-looking ids
        that also serve it (its aliases that name Claude, and `claude-<id>` when claude_aliases is on),
        because clients such as Claude Code keep only ids that contain "claude" or "anthropic"."""
        listed = [(model_id, resolved.card) for model_id, resolved in self._models.items()]
        for model_id, resolved in self._models.items():
            names = [alias for alias, target in self._aliases.items() if target == model_id and _claude_like(alias)]
            if self._claude_aliases and not _claude_like(model_id):
                names.append(CLAUDE_PREFIX + model_id)
            listed += [(name, resolved.card) for name in dict.fromkeys(names)]
        return listed

    def engines(self) -> list[Engine]:
        unique: list[Engine] = []
        for resolved in self._models.values():
            if all(resolved.engine is not engine for engine in unique):
                unique.append(resolved.engine)
        return unique

"""Model ids, aliases and routes -> the engines and model cards that serve them, in order of preference.

A model id resolves to a `Route`: the id the client's limits are counted under, and its targets. A plain
model has one target; a `[[routes]]` entry lists several, the first healthy one serving and the
others standing by as fallbacks. Each engine has a circuit breaker: targets whose engine is out of
rotation go to the back of the list (still tried if nothing else is left).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from missive.engines.base import Engine
from missive.engines.breaker import Breaker
from missive.wire.errors import not_found
from missive.wire.models import ModelCard

CLAUDE_PREFIX = "claude-"


def _claude_like(model_id: str) -> bool:
    lowered = model_id.lower()
    return "claude" in lowered or "anthropic" in lowered


@dataclass(frozen=True)
class Resolved:
    engine: Engine
    card: ModelCard


@dataclass(frozen=True)
class Route:
    id: str  # the model id that limits and spend are counted under, whichever target serves
    targets: tuple[Resolved, ...]

    @property
    def card(self) -> ModelCard:
        """The card of the first target: what `/v1/models` shows and the limits a request is checked against."""
        return self.targets[0].card


class Registry:
    """Resolves a requested model id: routes and exact ids first, then aliases, then `claude-*` if enabled
    (`claude-<id>` is the model `<id>`; any other `claude-*` id is the default model)."""

    def __init__(
        self,
        engines: list[Engine],
        aliases: dict[str, str],
        default_model: str,
        claude_aliases: bool,
        routes: dict[str, list[str]] | None = None,
        new_breaker: Callable[[], Breaker] = Breaker,
    ):
        self._models: dict[str, Resolved] = {}
        self.breakers: dict[str, Breaker] = {}
        for engine in engines:
            self.breakers[engine.name] = new_breaker()
            for card in engine.models():
                if card.id in self._models:
                    raise ValueError(f"model {card.id!r} is served by two engines; give one of them another id")
                self._models[card.id] = Resolved(engine, card)
        for alias, target in aliases.items():
            if target not in self._models:
                raise ValueError(f"alias {alias!r} points at unknown model {target!r}")
        self._aliases = dict(aliases)
        self._routes: dict[str, Route] = {}
        for route_id, targets in (routes or {}).items():
            resolved = []
            for target in targets:
                model_id = self._aliases.get(target, target)
                if model_id not in self._models:
                    raise ValueError(f"route {route_id!r} names unknown model {target!r}")
                resolved.append(self._models[model_id])
            self._routes[route_id] = Route(route_id, tuple(resolved))
        if claude_aliases and self._route_of(default_model) is None:
            raise ValueError(f"default_model {default_model!r} is not a configured model")
        self._default = default_model
        self._claude_aliases = claude_aliases

    def _route_of(self, model_id: str) -> Route | None:
        if model_id in self._routes:
            return self._routes[model_id]
        resolved = self._models.get(self._aliases.get(model_id, model_id))
        return Route(resolved.card.id, (resolved,)) if resolved else None

    def resolve(self, model_id: str) -> Route:
        route = self._route_of(model_id)
        if route is None and self._claude_aliases and model_id.startswith(CLAUDE_PREFIX):
            route = self._route_of(model_id.removeprefix(CLAUDE_PREFIX)) or self._route_of(self._default)
        if route is None:
            raise not_found(f"model: {model_id}")
        return route

    def in_order(self, route: Route) -> Iterator[Resolved]:
        """The route's targets to try, one at a time: those whose engine is in rotation, then the others.
        Lazy, because asking a half-open breaker makes the request its probe."""
        skipped = []
        for target in route.targets:
            if self.breakers[target.engine.name].allows():
                yield target
            else:
                skipped.append(target)
        yield from skipped

    def listing(self) -> list[tuple[str, ModelCard]]:
        """What `GET /v1/models` lists: every route and model under its id, then under the Claude-looking
        ids that also serve it (aliases that name Claude, and `claude-<id>` when claude_aliases is on),
        because clients such as Claude Code keep only ids that contain "claude" or "anthropic"."""
        served = {model_id: resolved.card for model_id, resolved in self._models.items()}
        served |= {route_id: route.card for route_id, route in self._routes.items()}
        listed = list(served.items())
        for model_id, card in served.items():
            names = [alias for alias, target in self._aliases.items() if target == model_id and _claude_like(alias)]
            if self._claude_aliases and not _claude_like(model_id):
                names.append(CLAUDE_PREFIX + model_id)
            listed += [(name, card) for name in dict.fromkeys(names) if name not in served]
        return listed

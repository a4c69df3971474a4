"""Aliveness critics: one interface, an LLM critic (any OpenAI-compatible endpoint) and an offline one.

    from critic import critic_from_settings, run_critique

`critic_from_settings()` gives the LLM critic when $SATSANG_CRITIC_BASE_URL (or a
base_url argument) names an endpoint, else the offline critic. Both return
`CritiqueRecord`s: score 0-10, rationale, flags, agent, and for an item that could
not be judged, status "unscored" with its reason.

Names are loaded on first use, so importing the package stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "FLAGS": "critic.base",
    "RUBRIC": "critic.base",
    "RUBRIC_VERSION": "critic.base",
    "Critic": "critic.base",
    "CritiqueInput": "critic.base",
    "CritiqueRecord": "critic.base",
    "LLMCritic": "critic.llm",
    "LLMCriticConfig": "critic.llm",
    "CritiqueCache": "critic.llm",
    "parse_critique": "critic.llm",
    "OfflineCritic": "critic.offline",
    "OfflineCriticConfig": "critic.offline",
    "CritiqueReport": "critic.stage",
    "CriticSettingsError": "critic.stage",
    "critic_from_settings": "critic.stage",
    "run_critique": "critic.stage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'critic' has no attribute {name!r}")
    return getattr(import_module(module), name)
